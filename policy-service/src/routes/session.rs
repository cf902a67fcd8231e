//! The filter's session endpoints: the public keys, and renewal of an expired
//! session cookie from the live server-side session.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mlflow_edge_authz::wire::{self, RenewRequest, RenewResponse};

use crate::app::AppState;
use crate::session::CookieError;
use crate::store::{now, SessionRecord};
use crate::web::{cookie_max_age, json_response, session_cookie, ApiError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(wire::SESSION_KEYS_PATH, get(keys))
        .route(wire::SESSION_RENEW_PATH, post(renew))
}

async fn keys(State(state): State<AppState>) -> Result<Response, ApiError> {
    let jwks = state.keys.jwks(&state.store).await?;
    let body = serde_json::to_string(&jwks).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, body))
}

impl From<CookieError> for ApiError {
    fn from(err: CookieError) -> Self {
        match err {
            CookieError::Store(e) => ApiError::from(e),
            CookieError::Sign(e) => ApiError::Internal(e),
            CookieError::Expired => ApiError::Unauthenticated(
                "session has ended: the session cookie is too old to renew".into(),
            ),
            other => ApiError::Unauthenticated(other.to_string()),
        }
    }
}

/// Why a server-side session cannot be used, or `None` when it can.
pub fn session_problem(record: Option<&SessionRecord>, now: i64) -> Option<&'static str> {
    match record {
        None => Some("session has ended: it is unknown to the policy service"),
        Some(r) if r.revoked_at.is_some() => Some("session has ended: it was signed out"),
        Some(r) if r.expires_at <= now => Some("session has ended: it expired"),
        Some(r) if r.user.is_none() => Some("session has ended: the user no longer exists"),
        Some(_) => None,
    }
}

async fn renew(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: RenewRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"session\": \"<session cookie>\"}}: {e}"
        ))
    })?;
    let now = now();
    let now_u = u64::try_from(now).unwrap_or(0);
    let settings = &state.settings;
    let cookie = state
        .keys
        .verify(
            &state.store,
            &request.session,
            now_u,
            settings.permanent_session_lifetime,
        )
        .await?;
    let record = state.sessions.get(&cookie.sid).await?;
    if let Some(problem) = session_problem(record.as_ref(), now) {
        return Err(ApiError::Unauthenticated(problem.into()));
    }
    let Some((record, user)) = record.and_then(|r| r.user.clone().map(|u| (r, u))) else {
        return Err(ApiError::Unauthenticated("session has ended".into()));
    };
    if user.username != cookie.username {
        return Err(ApiError::Unauthenticated(
            "session has ended: it belongs to another user".into(),
        ));
    }
    let (session, expires_at) = state.keys.sign(
        &user.username,
        &record.id,
        user.is_admin,
        now_u,
        settings.session_token_ttl_seconds,
        u64::try_from(record.expires_at).unwrap_or(0),
    )?;
    // With SESSION_PERMANENT the browser keeps the cookie while the server-side
    // session lives; without, until it closes.
    let remaining = u64::try_from(record.expires_at - now).unwrap_or(0);
    let set_cookie = session_cookie(settings, &session, cookie_max_age(settings, remaining));
    let body = serde_json::to_string(&RenewResponse {
        session,
        expires_at,
        set_cookie,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, body).into_response())
}
