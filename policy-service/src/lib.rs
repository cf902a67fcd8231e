//! The policy service: OIDC sign-in, users, groups and sessions for MLflow
//! behind the Envoy edge filter, which verifies the session cookie this
//! service signs.

pub mod app;
pub mod crypto;
pub mod groups;
pub mod identity;
pub mod idp;
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
