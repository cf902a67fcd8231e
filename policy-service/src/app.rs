//! The application: shared state and the router, testable without a socket.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use mlflow_edge_authz::wire::{self, ErrorBody};
use thiserror::Error;

use crate::groups::{DetectorError, GroupDetector};
use crate::idp::{Idp, IdpError};
use crate::mlflow::{Mlflow, MlflowError};
use crate::permissions::PatternCache;
use crate::routes;
use crate::session::SessionKeys;
use crate::sessions::{SessionStore, SessionStoreError};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::web::json_response;

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Idp(#[from] IdpError),
    #[error(transparent)]
    Groups(#[from] DetectorError),
    #[error(transparent)]
    Sessions(#[from] SessionStoreError),
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
}

pub struct Inner {
    pub settings: Settings,
    pub store: Store,
    pub keys: SessionKeys,
    /// Where server-side sessions live (`SESSION_TYPE`).
    pub sessions: Arc<dyn SessionStore>,
    pub idp: Arc<Idp>,
    /// Where signing-in users' groups come from (`OIDC_GROUP_DETECTION_PLUGIN`).
    pub groups: Box<dyn GroupDetector>,
    /// Seals the IdP refresh tokens kept on sessions (key from `SECRET_KEY`).
    pub sealer: crate::crypto::Sealer,
    /// MLflow's REST API (`MLFLOW_TRACKING_URI`), to resolve what requests name.
    pub mlflow: Mlflow,
    /// Compiled pattern grants.
    pub patterns: PatternCache,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens and migrates the database and loads (or creates) the session
    /// signing key. Does not contact the identity provider.
    pub async fn new(settings: Settings) -> Result<Self, StartError> {
        let store =
            Store::connect_with(&settings.database_url, settings.migrations_table.as_deref())
                .await?;
        let keys = SessionKeys::load_or_create(&store).await?;
        let sessions = crate::sessions::open(&settings, &store)?;
        let idp = Arc::new(Idp::new(&settings)?);
        let groups = crate::groups::detector(&settings, idp.clone())?;
        let sealer = crate::crypto::Sealer::new(&settings.secret_key);
        let mlflow = Mlflow::new(&settings)?;
        store.bump_epoch().await?;
        Ok(AppState(Arc::new(Inner {
            mlflow,
            patterns: PatternCache::default(),
            sealer,
            settings,
            store,
            keys,
            sessions,
            idp,
            groups,
        })))
    }
}

pub fn app(state: AppState) -> Router {
    routes::all()
        .get("/health", health)
        .into_parts()
        .0
        .merge(routes::ui::router())
        // The callback path comes from OIDC_REDIRECT_URI; the fallback serves it,
        // so no configured path can clash with a route.
        .fallback(routes::auth::callback_or_not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            filter_only,
        ))
        .with_state(state)
}

/// The internal API (`/authz/v1/...`, but for the public keys) answers only the edge
/// filter when `AUTHZ_SHARED_KEY` is set: 403 otherwise, which the filter reports as a
/// misconfiguration (503), never as a verdict on a user's credential.
async fn filter_only(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/authz/") && path != wire::SESSION_KEYS_PATH {
        if let Some(expected) = &state.settings.authz_shared_key {
            let sent = request
                .headers()
                .get(wire::SERVICE_KEY_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            // Compare digests: equal length, so the comparison time says nothing.
            if hmac_sha256::Hash::hash(sent) != hmac_sha256::Hash::hash(expected.as_bytes()) {
                return json_response(
                    StatusCode::FORBIDDEN,
                    ErrorBody::new(
                        "PERMISSION_DENIED",
                        format!(
                            "the internal API needs the {} header of the edge filter",
                            wire::SERVICE_KEY_HEADER
                        ),
                    )
                    .to_json(),
                );
            }
        }
    }
    next.run(request).await
}

async fn health() -> &'static str {
    "ok"
}

pub fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        ErrorBody::new(
            "ENDPOINT_NOT_FOUND",
            "no such endpoint in the policy service",
        )
        .to_json(),
    )
    .into_response()
}
