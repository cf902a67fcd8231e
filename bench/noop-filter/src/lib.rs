//! Continues every request untouched.

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod noop {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Noop) });
    }}

    struct Noop;
    impl Context for Noop {}
    impl HttpContext for Noop {}
    impl RootContext for Noop {
        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Noop))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }
}
