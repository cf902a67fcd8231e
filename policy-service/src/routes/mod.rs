//! One router per domain.

pub mod auth;
pub mod credentials;
pub mod decisions;
pub mod permissions;
pub mod session;
pub mod tokens;
pub mod users;
