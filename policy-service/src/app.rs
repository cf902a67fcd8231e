//! The application: shared state and the router, testable without a socket.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mlflow_edge_authz::wire::ErrorBody;
use thiserror::Error;

use crate::groups::{DetectorError, GroupDetector};
use crate::idp::{Idp, IdpError};
use crate::routes;
use crate::session::SessionKeys;
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
}

pub struct Inner {
    pub settings: Settings,
    pub store: Store,
    pub keys: SessionKeys,
    pub idp: Arc<Idp>,
    /// Where signing-in users' groups come from (`OIDC_GROUP_DETECTION_PLUGIN`).
    pub groups: Box<dyn GroupDetector>,
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
        let store = Store::connect(&settings.database_url).await?;
        let keys = SessionKeys::load_or_create(&store).await?;
        let idp = Arc::new(Idp::new(&settings)?);
        let groups = crate::groups::detector(&settings, idp.clone())?;
        Ok(AppState(Arc::new(Inner {
            settings,
            store,
            keys,
            idp,
            groups,
        })))
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(routes::auth::router())
        .merge(routes::session::router())
        .merge(routes::tokens::router())
        // The callback path comes from OIDC_REDIRECT_URI; the fallback serves it,
        // so no configured path can clash with a route.
        .fallback(routes::auth::callback_or_not_found)
        .with_state(state)
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
