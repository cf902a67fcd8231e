//! Sessions of a user: sign out everywhere (self), or end someone's sessions (admin);
//! deactivating a user (admin) ends their sessions and deletes their access tokens.
//! The filter's cookies then stop working within `SESSION_TOKEN_TTL_SECONDS`, when
//! their renewal finds the session ended.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;
use crate::routes::auth::{me, them};
use crate::routes::Api;
use crate::store::{now, UserRecord};
use crate::web::ApiError;

const WHAT: &str = "sessions";

pub fn api() -> Api {
    Api::new()
        .twins(
            Method::DELETE,
            "/2.0/mlflow/users/current/sessions",
            end_mine,
        )
        .twins(
            Method::DELETE,
            "/2.0/mlflow/users/{username}/sessions",
            end_theirs,
        )
        .twins(
            Method::PATCH,
            "/2.0/mlflow/users/{username}/active",
            set_active,
        )
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Active {
    active: bool,
}

/// `{"active": false}`: the user can no longer sign in, and their sessions and access
/// tokens stop working (cookies within `SESSION_TOKEN_TTL_SECONDS`, tokens within the
/// filter's `access_token_cache_seconds`); their grants are kept. `true` lets them back.
async fn set_active(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Active = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"active\": true|false}}: {e}"
        ))
    })?;
    let admin = me(&state, &headers, "users").await?;
    if !admin.is_admin {
        return Err(ApiError::Forbidden(
            "only admins deactivate or reactivate users".into(),
        ));
    }
    let username = username.to_lowercase();
    if username == admin.username && !request.active {
        return Err(ApiError::BadRequest(
            "admins cannot deactivate themselves".into(),
        ));
    }
    let id = state
        .store
        .set_user_active(&username, request.active, &admin.username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {username:?} does not exist")))?;
    let (mut sessions, mut tokens) = (0, 0);
    if !request.active {
        sessions = state.sessions.revoke_all_of_user(id, now()).await?;
        tokens = state.store.delete_user_tokens(id).await?;
    }
    tracing::info!(%username, active = request.active, sessions, tokens, by = %admin.username, "user activation changed");
    Ok(Json(json!({"username": username, "active": request.active, "sessions_revoked": sessions, "tokens_deleted": tokens})).into_response())
}
