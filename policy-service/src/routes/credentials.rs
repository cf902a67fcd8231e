//! What the filter asks the policy service about credentials it cannot settle alone:
//! an access token (HTTP Basic), and a verified bearer token whose user may need
//! creating (`OIDC_PROVISION_ON_BEARER_AUTH`).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mlflow_edge_authz::wire::{self, BasicCredential, BearerCredential, CredentialIdentity};

use crate::app::AppState;
use crate::identity;
use crate::routes::auth::{gate, GateError};
use crate::routes::Api;
use crate::store::now;
use crate::tokens::{self, CheckError};
use crate::web::ApiError;

pub fn api() -> Api {
    Api::new()
        .post(wire::BASIC_CHECK_PATH, check)
        .post(wire::BEARER_CHECK_PATH, bearer)
}

/// The filter asks: who does this `username:token` speak for?
async fn check(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let credential: BasicCredential = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"username\", \"token\"}}: {e}"
        ))
    })?;
    match tokens::check(&state.store, &credential, now()).await {
        Ok(identity) => Ok(Json(identity).into_response()),
        Err(CheckError::Refused(why)) => Err(ApiError::Unauthenticated(why.into())),
        Err(CheckError::Store(e)) => Err(e.into()),
    }
}

/// The filter verified this bearer token (signature, issuer, audience, time); the
/// service trusts its claims because the call carries the shared key. A known user is
/// who the database says (admin included); an unknown one is created when
/// `OIDC_PROVISION_ON_BEARER_AUTH` is on and the group gate admits them, never as
/// admin unless `OIDC_TRUST_BEARER_GROUP_CLAIMS`.
async fn bearer(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let c: BearerCredential = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"username\", \"token\", \"claims\"}}: {e}"
        ))
    })?;
    let settings = &state.settings;
    if settings.authz_shared_key.is_none() {
        // Without the key anyone who reaches the service could create users.
        return Err(ApiError::Unavailable(
            "bearer users cannot be checked: set AUTHZ_SHARED_KEY for the service and Envoy".into(),
        ));
    }
    let username = c.username.to_lowercase();
    // Valid for as long as the token: the filter bounds the cache by its exp.
    let identity = |username: String, admin: bool| CredentialIdentity {
        username,
        admin,
        expires_at: u64::MAX,
    };
    if state.store.is_deactivated(&username).await? {
        return Err(ApiError::Unauthenticated(format!(
            "the account {username} is deactivated"
        )));
    }
    // A row a grant created (the user never signed in) does not skip the gate.
    if let Some(user) = state.store.admitted_user(&username).await? {
        return Ok(Json(identity(user.username, user.is_admin)).into_response());
    }
    if !settings.oidc_provision_on_bearer_auth {
        return Ok(Json(identity(username, false)).into_response());
    }
    match gate(&state, &username, &c.claims, &c.token).await {
        Ok((in_admin_group, groups)) => {
            let admin = in_admin_group && settings.oidc_trust_bearer_group_claims;
            let display_name = identity::display_name(&c.claims, &username);
            state
                .store
                .record_login(&username, &display_name, admin, &groups, now())
                .await?;
            tracing::info!(%username, admin, "provisioned on first bearer call");
            Ok(Json(identity(username, admin)).into_response())
        }
        Err(GateError::Refused) => Err(ApiError::Unauthenticated(format!(
            "{username} is not in a group allowed to use MLflow"
        ))),
        Err(GateError::Detector(e)) => Err(ApiError::Unavailable(format!(
            "the groups of {username} cannot be read: {e}"
        ))),
    }
}
