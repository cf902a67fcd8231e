//! The policy service: OIDC sign-in, users, groups, sessions and permissions for
//! MLflow behind the Envoy edge filter, which verifies the session cookie this
//! service signs and asks it for decisions.

pub mod app;
pub mod crypto;
pub mod directory;
pub mod grants;
pub mod groups;
pub mod identity;
pub mod idp;
pub mod listing;
pub mod mlflow;
pub mod permissions;
pub mod routes;
pub mod session;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod tokens;
pub mod web;

pub use app::{app, AppState};
pub use settings::Settings;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_permissions;
