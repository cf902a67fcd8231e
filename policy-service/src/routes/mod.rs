//! One router per domain, each built through [`Api`], which also keeps the table of
//! every (method, path) it routes: the OpenAPI document (`openapi.json`) is checked
//! against that table, so a route and the document cannot disagree unnoticed.

pub mod auth;
pub mod credentials;
pub mod decisions;
pub mod directory;
pub mod permissions;
pub mod session;
pub mod tokens;
pub mod ui;
pub mod users;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::app::AppState;

/// The prefixes MLflow's own API answers under; the management routes answer under
/// both, as upstream's do.
pub const API_PREFIXES: [&str; 2] = ["/api", "/ajax-api"];

/// A router and the table of what it routes.
#[derive(Default)]
pub struct Api {
    router: Router<AppState>,
    table: Vec<(Method, String)>,
}

impl Api {
    pub fn new() -> Self {
        Self::default()
    }

    /// `method` on `path`.
    pub fn route<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        path: &str,
        handler: H,
    ) -> Self {
        // Only the standard methods are routed here; each has a filter.
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        // Routes on one path merge (axum panics on a method routed twice).
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path.to_string()));
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::GET, path, handler)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.route(Method::POST, path, handler)
    }

    /// `method` on `{prefix}{path}` for each of [`API_PREFIXES`].
    pub fn twins<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        path: &str,
        handler: H,
    ) -> Self {
        for prefix in API_PREFIXES {
            self = self.route(method.clone(), &format!("{prefix}{path}"), handler.clone());
        }
        self
    }

    pub fn merge(mut self, other: Api) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<(Method, String)>) {
        (self.router, self.table)
    }
}

/// Every router of the service.
pub fn all() -> Api {
    Api::new()
        .merge(auth::api())
        .merge(session::api())
        .merge(tokens::api())
        .merge(credentials::api())
        .merge(users::api())
        .merge(directory::api())
        .merge(decisions::api())
        .merge(permissions::api())
}

/// Every (method, path) the service routes, paths in axum's syntax (`{id}`,
/// `{*name}`).
pub fn table() -> Vec<(Method, String)> {
    all().into_parts().1
}
