//! MLflow's authorization layer at the edge: an Envoy WebAssembly filter.
//!
//! Everything but `glue` is plain Rust with no proxy-wasm dependency, tested natively
//! and under wasm32 (`wasm-bindgen-test`). `glue` turns Envoy's host calls into it.

pub mod wire;
