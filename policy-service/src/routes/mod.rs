//! One router per domain.

pub mod auth;
pub mod session;
pub mod tokens;
