//! The answers the filter gives itself: MLflow's JSON error shape for API clients,
//! a redirect to the sign-in page for browsers.

use crate::wire::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    fn json(status: u32, error_code: &str, message: &str) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: ErrorBody::new(error_code, message).to_json(),
        }
    }

    /// 401: no credentials, or credentials that do not check out.
    pub fn unauthenticated(message: &str, invalid_token: bool) -> Reply {
        let mut r = Reply::json(401, "UNAUTHENTICATED", message);
        // RFC 6750 §3: no error code when no credentials were sent.
        let challenge = if invalid_token {
            format!(
                "Bearer realm=\"mlflow\", error=\"invalid_token\", error_description=\"{}\"",
                message.replace(['"', '\\'], "'")
            )
        } else {
            "Bearer realm=\"mlflow\"".to_string()
        };
        r.headers.push(("www-authenticate".into(), challenge));
        r
    }

    /// 403: the user is known but may not do this; the message names what is missing.
    pub fn forbidden(message: &str) -> Reply {
        Reply::json(403, "PERMISSION_DENIED", message)
    }

    /// 400: a request the filter will not guess about (MLflow would read it differently).
    pub fn bad_request(message: &str) -> Reply {
        Reply::json(400, "INVALID_PARAMETER_VALUE", message)
    }

    /// 413: a body larger than the filter reads.
    pub fn too_large(message: &str) -> Reply {
        Reply::json(413, "INVALID_PARAMETER_VALUE", message)
    }

    /// 503: a dependency (IdP, policy service) is down or slow. Never a pass.
    pub fn unavailable(message: &str) -> Reply {
        Reply::json(503, "TEMPORARILY_UNAVAILABLE", message)
    }

    /// 302 to the sign-in page, keeping where the browser was going.
    pub fn sign_in(login_path: &str, path_and_query: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![
                (
                    "location".into(),
                    format!("{login_path}?next={}", percent_encode(path_and_query)),
                ),
                ("cache-control".into(), "no-store".into()),
            ],
            body: String::new(),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn sign_in_keeps_the_whole_target() {
        let r = Reply::sign_in("/oidc/login", "/#/experiments/1?a=b&c=d");
        assert_eq!(r.status, 302);
        assert_eq!(
            r.headers[0].1,
            "/oidc/login?next=%2F%23%2Fexperiments%2F1%3Fa%3Db%26c%3Dd"
        );
    }

    #[test]
    fn refusals_use_mlflow_error_shape_and_a_challenge() {
        let r = Reply::unauthenticated("token has \"expired\"", true);
        assert_eq!(r.status, 401);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error_code"], "UNAUTHENTICATED");
        let challenge = &r
            .headers
            .iter()
            .find(|h| h.0 == "www-authenticate")
            .unwrap()
            .1;
        assert!(challenge.starts_with("Bearer realm=\"mlflow\", error=\"invalid_token\""));
        assert!(!challenge[40..].contains("\"expired\""));
    }
}
