//! Sessions of a user: sign out everywhere (self), or end someone's sessions (admin).
//! The filter's cookies then stop working within `SESSION_TOKEN_TTL_SECONDS`, when
//! their renewal finds the session ended.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::routes::auth::{me, them};
use crate::store::{now, UserRecord};
use crate::web::ApiError;

const WHAT: &str = "sessions";

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for api in ["/api", "/ajax-api"] {
        r = r
            .route(
                &format!("{api}/2.0/mlflow/users/current/sessions"),
                delete(end_mine),
            )
            .route(
                &format!("{api}/2.0/mlflow/users/{{username}}/sessions"),
                delete(end_theirs),
            );
    }
    r
}

async fn end_all(state: &AppState, user: &UserRecord) -> Result<Response, ApiError> {
    let ended = state.sessions.revoke_all_of_user(user.id, now()).await?;
    tracing::info!(username = %user.username, ended, "sessions ended");
    Ok(Json(json!({"revoked": ended})).into_response())
}

async fn end_mine(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let user = me(&state, &headers, WHAT).await?;
    end_all(&state, &user).await
}

async fn end_theirs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let user = them(&state, &headers, &username, WHAT).await?;
    end_all(&state, &user).await
}
