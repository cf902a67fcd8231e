//! The filter's session endpoints: the public keys, and renewal of an expired
//! session cookie from the live server-side session.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mlflow_edge_authz::wire::{self, RenewRequest, RenewResponse};

use crate::app::AppState;
use crate::idp::IdpError;
use crate::routes::auth::{gate, GateError};
use crate::routes::Api;
use crate::session::CookieError;
use crate::store::{now, IdpGrant, SessionRecord, UserRecord};
use crate::web::{cookie_max_age, json_response, session_cookie, ApiError};

pub fn api() -> Api {
    Api::new()
        .get(wire::SESSION_KEYS_PATH, keys)
        .post(wire::SESSION_RENEW_PATH, renew)
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
        Some(r) if r.user.is_none() => {
            Some("session has ended: the user no longer exists or was deactivated")
        }
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
    let is_admin = match (&record.grant, settings.oidc_use_refresh_token) {
        (Some(grant), true) => recheck(&state, &record.id, grant, &user, now).await?,
        _ => user.is_admin,
    };
    let (session, expires_at) = state.keys.sign(
        &user.username,
        &record.id,
        is_admin,
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

/// A session that keeps an IdP grant passes the gate again at every renewal: the
/// refresh token is exchanged (no browser involved) and the user's claims and
/// groups are read anew. A user the gate no longer admits, or a grant the IdP no
/// longer honours, ends the session; an IdP that does not answer is a 503.
async fn recheck(
    state: &AppState,
    sid: &str,
    grant: &IdpGrant,
    user: &UserRecord,
    now: i64,
) -> Result<bool, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::Unavailable(format!("session cannot be renewed: {e}"))
    };
    let refresh_token = match state.sealer.open(&grant.sealed_refresh_token) {
        Ok(token) => token,
        Err(e) => {
            return end(
                state,
                sid,
                now,
                format!("session has ended: its refresh token cannot be read ({e})"),
            )
            .await
        }
    };
    let fresh = match state.idp.refresh(&refresh_token).await {
        Ok(fresh) => fresh,
        Err(IdpError::Refused(why)) => {
            let why =
                format!("session has ended: the identity provider no longer honours it ({why})");
            return end(state, sid, now, why).await;
        }
        Err(e) => return Err(unavailable(&e)),
    };
    if let Some(rotated) = fresh.refresh_token.filter(|t| *t != refresh_token) {
        let sealed_refresh_token = state.sealer.seal(&rotated).map_err(ApiError::Internal)?;
        let rotated = IdpGrant {
            subject: grant.subject.clone(),
            sealed_refresh_token,
        };
        state.sessions.set_grant(sid, &rotated, now).await?;
    }
    let claims = state
        .idp
        .userinfo(&fresh.access_token, &grant.subject)
        .await
        .map_err(|e| unavailable(&e))?;
    match gate(state, &user.username, &claims, &fresh.access_token).await {
        Ok((is_admin, groups)) => {
            state
                .store
                .record_login(&user.username, &user.display_name, is_admin, &groups, now)
                .await?;
            Ok(is_admin)
        }
        Err(GateError::Refused) => {
            let why = format!(
                "session has ended: {} is no longer in an allowed group",
                user.username
            );
            end(state, sid, now, why).await
        }
        Err(GateError::Detector(e)) => Err(unavailable(&e)),
    }
}

async fn end(state: &AppState, sid: &str, now: i64, why: String) -> Result<bool, ApiError> {
    state.sessions.revoke(sid, now).await?;
    tracing::info!("{why}");
    Err(ApiError::Unauthenticated(why))
}
