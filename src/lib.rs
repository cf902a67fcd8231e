//! MLflow's authorization layer at the edge: an Envoy WebAssembly filter.
//!
//! Everything but `glue` is plain Rust with no proxy-wasm dependency, tested natively
//! and under wasm32 (`wasm-bindgen-test`). `glue` turns Envoy's host calls into it.

pub mod authn;
pub mod authz;
pub mod cache;
pub mod claims;
pub mod keys;
pub mod mlflow;
pub mod permission;
pub mod reply;
pub mod settings;
pub mod token;
pub mod wire;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod glue;
