//! Personal access tokens: a signed-in user manages their own, an admin anyone's;
//! and the filter's check of a token sent as HTTP Basic.
//! The management routes also answer under `/ajax-api`, as MLflow's own do.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::routes::auth::{browser_user, me, them};
use crate::routes::Api;
use crate::store::{now, UserRecord};
use crate::tokens::{self, MAX_LIVE_PER_USER};
use crate::web::{json_response, ApiError};

/// What these routes manage, for the refusals of `me` and `them`.
const WHAT: &str = "access tokens";

pub fn api() -> Api {
    Api::new()
        .twins(Method::GET, "/2.0/mlflow/users/current/tokens", list_mine)
        .twins(
            Method::POST,
            "/2.0/mlflow/users/current/tokens",
            create_mine,
        )
        .twins(
            Method::DELETE,
            "/2.0/mlflow/users/current/tokens/{id}",
            delete_mine,
        )
        .twins(
            Method::GET,
            "/2.0/mlflow/users/{username}/tokens",
            list_theirs,
        )
        .twins(
            Method::POST,
            "/2.0/mlflow/users/{username}/tokens",
            create_theirs,
        )
        .twins(
            Method::DELETE,
            "/2.0/mlflow/users/{username}/tokens/{id}",
            delete_theirs,
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    #[serde(default)]
    expiration: Option<Value>,
}

async fn create(
    state: &AppState,
    owner: &UserRecord,
    created_by: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request: CreateToken = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"name\", \"expiration\"?}}: {e}"
        ))
    })?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let now = now();
    let expires_at =
        tokens::expires_at(request.expiration.as_ref(), now).map_err(ApiError::BadRequest)?;
    if state.store.purge_and_count_tokens(owner.id, now).await? >= MAX_LIVE_PER_USER {
        return Err(ApiError::BadRequest(format!(
            "{} already has {MAX_LIVE_PER_USER} live access tokens; revoke one first",
            owner.username
        )));
    }
    let new = tokens::mint();
    let record = state
        .store
        .insert_token(
            owner.id,
            name,
            &new.prefix,
            &new.hash,
            created_by,
            now,
            expires_at,
        )
        .await?;
    let mut body = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["token"] = Value::String(new.plaintext);
    body["username"] = Value::String(owner.username.clone());
    body["message"] =
        Value::String("this is the only time the token is shown; store it safely".into());
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

async fn list(state: &AppState, owner: &UserRecord) -> Result<Response, ApiError> {
    let tokens = state.store.tokens(owner.id).await?;
    Ok(Json(json!({"tokens": tokens})).into_response())
}

async fn remove(state: &AppState, owner: &UserRecord, id: i64) -> Result<Response, ApiError> {
    if state.store.delete_token(owner.id, id).await? {
        Ok(Json(json!({"deleted": 1})).into_response())
    } else {
        Err(ApiError::NotFound(format!(
            "{} has no access token {id}",
            owner.username
        )))
    }
}

async fn list_mine(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = me(&state, &headers, WHAT).await?;
    list(&state, &user).await
}

async fn create_mine(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Issuance needs an interactive sign-in: a token must not mint tokens.
    let user = browser_user(&state, &headers, WHAT).await?;
    create(&state, &user, &user.username, &body).await
}

async fn delete_mine(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let user = me(&state, &headers, WHAT).await?;
    remove(&state, &user, id).await
}

async fn list_theirs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let user = them(&state, &headers, &username, WHAT).await?;
    list(&state, &user).await
}

async fn create_theirs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(username): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let admin = browser_user(&state, &headers, WHAT).await?;
    let user = them(&state, &headers, &username, WHAT).await?;
    create(&state, &user, &admin.username, &body).await
}

async fn delete_theirs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((username, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let user = them(&state, &headers, &username, WHAT).await?;
    remove(&state, &user, id).await
}
