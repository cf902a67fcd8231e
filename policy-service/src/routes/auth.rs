//! Browser sign-in: `/oidc/login` → IdP → callback (the path of
//! `OIDC_REDIRECT_URI`) → session cookie; `/logout`; `/oidc/auth/status`.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::{not_found, AppState};
use crate::groups::DetectorError;
use crate::identity::{self, Admission};
use crate::idp::{BearerError, IdpError};
use crate::routes::session::session_problem;
use crate::routes::Api;
use crate::sessions::{NewSession, SessionStoreError};
use crate::store::{now, IdpGrant, UserRecord};
use crate::tokens::{self, CheckError};
use crate::web::{
    cookie_max_age, cookie_value, redirect, sanitize_next, session_cookie, ApiError, PageError,
};
use mlflow_edge_authz::authn::{parse_authorization, parse_basic, Credential};

pub const LOGIN_PATH: &str = "/oidc/login";
/// Where a signed-out browser lands (also after the IdP's own sign-out): a page with
/// the sign-in button, not MLflow, which would sign a user with a live IdP session
/// straight back in.
pub const SIGNED_OUT_PATH: &str = "/oidc/signed-out";

pub fn api() -> Api {
    Api::new()
        .get(LOGIN_PATH, login)
        .get("/logout", logout)
        .get(SIGNED_OUT_PATH, signed_out)
        .get("/oidc/auth/status", status)
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn random_id() -> String {
    mlflow_edge_authz::wire::base64url_encode(&rand::random::<[u8; 32]>())
}

fn start_again() -> (&'static str, &'static str) {
    (LOGIN_PATH, "Sign in again")
}

impl From<IdpError> for PageError {
    fn from(err: IdpError) -> Self {
        let status = match err {
            IdpError::Unreachable { .. } | IdpError::BadDiscovery { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IdpError::TokenRequest(_) | IdpError::Client(_) | IdpError::UserInfo(_) => {
                StatusCode::BAD_GATEWAY
            }
            IdpError::Refused(_) | IdpError::InvalidIdToken(_) => StatusCode::BAD_REQUEST,
        };
        tracing::warn!("sign-in failed: {err}");
        let (href, text) = start_again();
        PageError::new(status, "Sign-in failed", err.to_string()).with_link(href, text)
    }
}

async fn login(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = query_map(query.as_deref());
    let next = sanitize_next(params.get("next").map(String::as_str));
    let start = state.idp.start_login().await?;
    state
        .store
        .insert_auth_state(
            &start.state,
            &start.nonce,
            &start.pkce_verifier,
            &next,
            now(),
        )
        .await?;
    Ok(redirect(start.url.as_str(), None))
}

/// Serves the callback at the path of `OIDC_REDIRECT_URI`; 404 elsewhere.
pub async fn callback_or_not_found(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
) -> Response {
    // GET only: a HEAD must not consume the single-use state.
    if uri.path() != state.settings.callback_path() || method != Method::GET {
        return not_found();
    }
    match callback(&state, &query_map(uri.query())).await {
        Ok(response) => response,
        Err(page) => page.into_response(),
    }
}

async fn callback(
    state: &AppState,
    params: &HashMap<String, String>,
) -> Result<Response, PageError> {
    let (href, text) = start_again();
    let auth_state = match params.get("state") {
        Some(s) if !s.is_empty() => state.store.take_auth_state(s, now()).await?,
        _ => None,
    };
    if let Some(error) = params.get("error") {
        let mut message = format!("The identity provider refused the sign-in: {error}");
        if let Some(description) = params.get("error_description") {
            message.push_str(": ");
            message.push_str(description);
        }
        return Err(
            PageError::new(StatusCode::BAD_REQUEST, "Sign-in failed", message)
                .with_link(href, text),
        );
    }
    let Some(auth_state) = auth_state else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This sign-in attempt is unknown or expired (it may have been used already, \
             or taken more than 15 minutes). Please start again.",
        )
        .with_link(href, text));
    };
    let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider sent no authorization code.",
        )
        .with_link(href, text));
    };
    // RFC 9207: an `iss` in the response must be the provider's.
    if let Some(iss) = params.get("iss") {
        let issuer = state.idp.issuer().await?;
        if *iss != issuer {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                format!("The sign-in response came from {iss}, not from {issuer}."),
            )
            .with_link(href, text));
        }
    }
    let tokens = state
        .idp
        .finish_login(code, &auth_state.pkce_verifier, &auth_state.nonce)
        .await?;
    let grant = match (&tokens.refresh_token, state.settings.oidc_use_refresh_token) {
        (Some(refresh_token), true) => Some(grant_of(state, &tokens.claims, refresh_token)?),
        (None, true) => {
            tracing::warn!(
                "OIDC_USE_REFRESH_TOKEN is set but the identity provider issued no refresh token"
            );
            None
        }
        (_, false) => None,
    };
    complete_login(
        state,
        &tokens.claims,
        &tokens.access_token,
        grant,
        &auth_state.next,
        now(),
    )
    .await
}

/// The session's IdP grant: the ID token's `sub` and the sealed refresh token.
fn grant_of(
    state: &AppState,
    claims: &Map<String, Value>,
    refresh_token: &str,
) -> Result<IdpGrant, PageError> {
    let failed =
        |why: String| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed", why);
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| failed("the ID token has no sub".into()))?;
    Ok(IdpGrant {
        subject: subject.to_string(),
        sealed_refresh_token: state.sealer.seal(refresh_token).map_err(failed)?,
    })
}

/// Why the gate did not let a user in.
pub enum GateError {
    /// The groups could not be read (IdP, Graph): never a pass.
    Detector(DetectorError),
    Refused,
}

/// The user's groups (from the detector, given their access token) and the gate:
/// `Ok(is_admin, groups)` when admitted. Used at sign-in and at every renewal of a
/// session that keeps a refresh token.
pub async fn gate(
    state: &AppState,
    username: &str,
    claims: &Map<String, Value>,
    access_token: &str,
) -> Result<(bool, Vec<String>), GateError> {
    let settings = &state.settings;
    let groups = state
        .groups
        .groups(access_token, claims)
        .await
        .map_err(GateError::Detector)?;
    match identity::admission(
        &groups,
        &settings.oidc_group_name,
        &settings.oidc_group_name_pattern,
        &settings.oidc_admin_group_name,
    ) {
        Admission::Admin => Ok((true, groups)),
        Admission::Member => Ok((false, groups)),
        Admission::MemberByPattern { group, pattern } => {
            tracing::info!(%username, %group, %pattern, "admitted by OIDC_GROUP_NAME_PATTERN");
            Ok((false, groups))
        }
        Admission::Refused => {
            tracing::info!(%username, ?groups, "refused: not in an allowed group");
            Err(GateError::Refused)
        }
    }
}

/// What follows a verified ID token: username, groups (from the group detector,
/// given the user's access token) and the gate; then the user row, group
/// memberships, a server-side session (with the IdP grant, if kept) and the cookie.
pub async fn complete_login(
    state: &AppState,
    claims: &Map<String, Value>,
    access_token: &str,
    grant: Option<IdpGrant>,
    next: &str,
    now: i64,
) -> Result<Response, PageError> {
    let settings = &state.settings;
    let (href, text) = start_again();
    let username = identity::username(claims, &settings.oidc_username_field).map_err(|msg| {
        PageError::new(StatusCode::FORBIDDEN, "Sign-in refused", msg).with_link(href, text)
    })?;
    if state.store.is_deactivated(&username).await? {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            format!(
                "You are not allowed to sign in to MLflow: the account {username} is deactivated."
            ),
        ));
    }
    let (is_admin, groups) = match gate(state, &username, claims, access_token).await {
        Ok(admitted) => admitted,
        Err(GateError::Detector(err)) => {
            tracing::warn!(%username, detector = state.groups.name(), "sign-in failed: {err}");
            let status = match err {
                DetectorError::Client(_) => StatusCode::INTERNAL_SERVER_ERROR,
                DetectorError::Graph(_) | DetectorError::UserInfo(_) => StatusCode::BAD_GATEWAY,
            };
            return Err(
                PageError::new(status, "Sign-in failed", err.to_string()).with_link(href, text)
            );
        }
        Err(GateError::Refused) => {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                format!(
                "You are not allowed to sign in to MLflow: {username} is not in an allowed group."
            ),
            ))
        }
    };
    let display_name = identity::display_name(claims, &username);
    let user_id = state
        .store
        .record_login(&username, &display_name, is_admin, &groups, now)
        .await?;
    let lifetime = i64::try_from(settings.permanent_session_lifetime).unwrap_or(i64::MAX);
    let sid = random_id();
    let expires_at = now.saturating_add(lifetime);
    state
        .sessions
        .create(&NewSession {
            id: sid.clone(),
            user_id,
            username: username.clone(),
            created_at: now,
            expires_at,
            grant,
        })
        .await?;
    let (token, _) = state
        .keys
        .sign(
            &username,
            &sid,
            is_admin,
            u64::try_from(now).unwrap_or(0),
            settings.session_token_ttl_seconds,
            u64::try_from(expires_at).unwrap_or(0),
        )
        .map_err(|e| {
            tracing::error!("{e}");
            PageError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "The session could not be created.",
            )
        })?;
    tracing::info!(%username, is_admin, "signed in");
    let max_age = cookie_max_age(settings, settings.permanent_session_lifetime);
    let cookie = session_cookie(settings, &token, max_age);
    Ok(redirect(&sanitize_next(Some(next)), Some(cookie)))
}

/// Ends the cookie's session and clears the cookie. When the session store
/// cannot record the end, the answer is an error page and the cookie is kept, so
/// that the user can try again (a cleared cookie would hide a session that lives on).
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let settings = &state.settings;
    if let Some(token) = cookie_value(&headers, &settings.session_cookie_name) {
        let now = now();
        // An expired cookie still ends its session (it is refused later anyway).
        match state
            .keys
            .verify(
                &state.store,
                token,
                u64::try_from(now).unwrap_or(0),
                settings.permanent_session_lifetime,
            )
            .await
        {
            Ok(cookie) => match state.sessions.revoke(&cookie.sid, now).await {
                Ok(_) => tracing::info!(username = %cookie.username, "signed out"),
                Err(e) => {
                    tracing::error!(username = %cookie.username, "cannot end the session: {e}");
                    let status = match e {
                        SessionStoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                        SessionStoreError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    let message = format!(
                        "Your session could not be ended: the session store \
                         (SESSION_TYPE={}) is unavailable. You are still signed in; \
                         please try again shortly.",
                        state.sessions.name()
                    );
                    return PageError::new(status, "Sign-out failed", message)
                        .with_link("/logout", "Sign out again")
                        .into_response();
                }
            },
            Err(e) => tracing::debug!("logout with an unusable session cookie: {e}"),
        }
    }
    // Signed out here; now at the IdP too, when it offers RP-initiated logout, which
    // sends the browser back to the signed-out page.
    let landing = format!(
        "{}{SIGNED_OUT_PATH}",
        settings.oidc_redirect_uri.origin().ascii_serialization()
    );
    let target = match state.idp.end_session_url(&landing).await {
        Some(url) => url.to_string(),
        None => SIGNED_OUT_PATH.to_string(),
    };
    redirect(&target, Some(session_cookie(settings, "", Some(0))))
}

/// "You are signed out", with the sign-in button labelled `OIDC_PROVIDER_DISPLAY_NAME`.
async fn signed_out(State(state): State<AppState>) -> Response {
    let body = format!(
        "<p>You are signed out of MLflow.</p>\
         <p><a href=\"{LOGIN_PATH}?next=%2F\" role=\"button\" \
         style=\"display:inline-block;padding:.6rem 1.2rem;background:#0b57d0;color:#fff;\
         border-radius:.3rem;text-decoration:none\">{}</a></p>",
        crate::web::escape_html(&state.settings.oidc_provider_display_name)
    );
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        crate::web::page("Signed out", &body),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct AuthStatus {
    authenticated: bool,
    username: Option<String>,
    is_admin: bool,
}

/// The user of the request's own session cookie: its signature and a live
/// server-side session. `None` when there is no usable session. The cookie's own
/// `exp` only bounds the filter's inline check (the filter may have renewed it on
/// the way here); the session row is looked up every time.
pub async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<UserRecord>, ApiError> {
    let Some(token) = cookie_value(headers, &state.settings.session_cookie_name) else {
        return Ok(None);
    };
    let now = now();
    let grace = state.settings.permanent_session_lifetime;
    let Ok(cookie) = state
        .keys
        .verify(&state.store, token, u64::try_from(now).unwrap_or(0), grace)
        .await
    else {
        return Ok(None);
    };
    let record = state.sessions.get(&cookie.sid).await?;
    if session_problem(record.as_ref(), now).is_some() {
        return Ok(None);
    }
    Ok(record
        .and_then(|r| r.user)
        .filter(|user| user.username == cookie.username))
}

/// The caller of a management call, by the credentials it sent, checked here: the
/// service can be reached without Envoy, so no identity header counts. As the filter
/// reads them: the `Authorization` header (an access token in HTTP Basic, or an IdP
/// bearer token), else the session cookie. Only active users who are known here.
pub async fn me(state: &AppState, headers: &HeaderMap, what: &str) -> Result<UserRecord, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return browser_user(state, headers, what).await;
    };
    let value = value.to_str().map_err(|_| {
        ApiError::Unauthenticated("the authorization header is not readable text".into())
    })?;
    let username = match parse_authorization(value) {
        Credential::Basic(value) => {
            let credential = parse_basic(value).map_err(|e| ApiError::Unauthenticated(e.into()))?;
            match tokens::check(&state.store, &credential, now()).await {
                Ok(identity) => identity.username,
                Err(CheckError::Refused(why)) => return Err(ApiError::Unauthenticated(why.into())),
                Err(CheckError::Store(e)) => return Err(e.into()),
            }
        }
        Credential::Bearer(token) => {
            let claims = state
                .idp
                .verify_bearer(token, u64::try_from(now()).unwrap_or(0))
                .await
                .map_err(|e| match e {
                    BearerError::Invalid(_) => ApiError::Unauthenticated(e.to_string()),
                    BearerError::Idp(e) => {
                        ApiError::Unavailable(format!("bearer tokens cannot be checked: {e}"))
                    }
                })?;
            claims
                .username(&state.settings.oidc_username_field)
                .map_err(|e| ApiError::Unauthenticated(format!("the bearer token {e}")))?
                .to_lowercase()
        }
        Credential::Unsupported(why) => return Err(ApiError::Unauthenticated(why.into())),
        Credential::Session(_) | Credential::None => {
            return browser_user(state, headers, what).await
        }
    };
    state.store.user_by_name(&username).await?.ok_or_else(|| {
        ApiError::Unauthenticated(format!(
            "{username} is not a known, active user: sign in once in a browser"
        ))
    })
}

/// The signed-in user of a browser session: what only an interactive sign-in may
/// do (issuing access tokens) needs one.
pub async fn browser_user(
    state: &AppState,
    headers: &HeaderMap,
    what: &str,
) -> Result<UserRecord, ApiError> {
    signed_in(state, headers).await?.ok_or_else(|| {
        ApiError::Unauthenticated(format!("managing {what} needs a signed-in browser session"))
    })
}

/// The user an admin acts on; only admins act on other users.
pub async fn them(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    what: &str,
) -> Result<UserRecord, ApiError> {
    if !me(state, headers, what).await?.is_admin {
        return Err(ApiError::Forbidden(format!(
            "only admins manage other users' {what}"
        )));
    }
    state
        .store
        .user_by_name(&username.to_lowercase())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {username:?} does not exist")))
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(user) => Json(AuthStatus {
            authenticated: user.is_some(),
            is_admin: user.as_ref().is_some_and(|u| u.is_admin),
            username: user.map(|u| u.username),
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}
