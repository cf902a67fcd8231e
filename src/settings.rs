//! The filter's settings: one JSON document, from Envoy's `configuration` or Istio's
//! `pluginConfig`. Unknown fields and bad values refuse the configuration with a
//! message that names the field.

use serde::Deserialize;

/// Algorithms a token may be signed with. Never `none`, never HMAC: the IdP's keys
/// are public, and an HMAC "signed" with a public key proves nothing.
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The IdP's discovery document (`OIDC_DISCOVERY_URL`); its `issuer` and
    /// `jwks_uri` are read through `idp_cluster`.
    pub oidc_discovery_url: String,
    /// Accepted `aud` values of bearer tokens (`OIDC_AUDIENCE`, else `OIDC_CLIENT_ID`).
    pub oidc_audience: Vec<String>,
    /// Expected `iss` (`OIDC_ISSUER`); default: the discovery document's issuer.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// Claims tried in order for the username (`OIDC_USERNAME_FIELD`).
    #[serde(default = "default_username_field")]
    pub oidc_username_field: Vec<String>,
    /// Envoy cluster that reaches the IdP (discovery and JWKS).
    #[serde(default = "default_idp_cluster")]
    pub idp_cluster: String,
    /// Envoy cluster that reaches the policy service.
    #[serde(default = "default_policy_service_cluster")]
    pub policy_service_cluster: String,
    #[serde(default = "default_allowed_algorithms")]
    pub allowed_algorithms: Vec<String>,
    /// Tolerance for `exp`, `nbf` and `iat`, in seconds. Set explicitly: jwt-simple's
    /// own default (15 minutes) would accept tokens long past their expiry.
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
    #[serde(default = "default_session_cookie_name")]
    pub session_cookie_name: String,
    /// Header that carries the verified username to MLflow. Clients' copies are dropped.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
    /// Where a browser without credentials is sent (`?next=` is added).
    #[serde(default = "default_login_path")]
    pub login_path: String,
    /// Path prefixes that pass without credentials (the sign-in routes). `/oidc/`
    /// matches everything below it; `/logout` matches `/logout` and `/logout/...`.
    #[serde(default = "default_public_paths")]
    pub public_paths: Vec<String>,
    /// Least time between two JWKS fetches caused by an unknown `kid`.
    #[serde(default = "default_jwks_refetch_interval_ms")]
    pub jwks_refetch_interval_ms: u64,
    /// Timeout of every callout (IdP, policy service).
    #[serde(default = "default_callout_timeout_ms")]
    pub callout_timeout_ms: u64,
    /// Verified tokens kept per VM.
    #[serde(default = "default_token_cache_max_entries")]
    pub token_cache_max_entries: usize,
    /// `OIDC_PROVISION_ON_BEARER_AUTH`, as the policy service has it: every new bearer
    /// token is shown to the service, which creates its user (after the group gate) or
    /// refuses it. Then new bearer tokens need the service (503 while it is down).
    #[serde(default)]
    pub oidc_provision_on_bearer_auth: bool,
    /// How long the policy service's answer about an access token (HTTP Basic) is
    /// reused: the bound on how long a revoked token keeps working.
    #[serde(default = "default_access_token_cache_seconds")]
    pub access_token_cache_seconds: u64,
    /// Signature checks that may fail per second per VM. Past it, tokens not yet
    /// verified get 503 until the second ends: a flood of distinct forgeries cannot
    /// buy a 0.5 ms signature check each. Cached tokens keep working.
    #[serde(default = "default_max_invalid_signatures_per_second")]
    pub max_invalid_signatures_per_second: u32,
    /// How often each VM asks the policy service for its policy epoch. A revoked
    /// grant stops working within about this long (plus one callout).
    #[serde(default = "default_epoch_poll_interval_ms")]
    pub epoch_poll_interval_ms: u64,
    /// Decisions (user, resource) kept per VM.
    #[serde(default = "default_decision_cache_max_entries")]
    pub decision_cache_max_entries: usize,
    /// Largest request body read for ids, and largest search answer filtered; larger
    /// ones are refused with 413 (requests) or 502 (answers), never passed unchecked.
    /// Artifact uploads are streamed, never read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_username_field() -> Vec<String> {
    vec!["email".into(), "preferred_username".into()]
}
fn default_idp_cluster() -> String {
    "idp".into()
}
fn default_policy_service_cluster() -> String {
    "policy-service".into()
}
fn default_allowed_algorithms() -> Vec<String> {
    ASYMMETRIC_ALGORITHMS
        .iter()
        .map(|a| a.to_string())
        .collect()
}
fn default_clock_skew_seconds() -> u64 {
    30
}
fn default_session_cookie_name() -> String {
    "mlflow_session".into()
}
fn default_identity_header() -> String {
    "x-forwarded-user".into()
}
fn default_login_path() -> String {
    "/oidc/login".into()
}
fn default_public_paths() -> Vec<String> {
    vec!["/oidc/".into(), "/callback".into(), "/logout".into()]
}
fn default_jwks_refetch_interval_ms() -> u64 {
    10_000
}
fn default_callout_timeout_ms() -> u64 {
    2_000
}
fn default_token_cache_max_entries() -> usize {
    10_000
}
fn default_access_token_cache_seconds() -> u64 {
    30
}
fn default_max_invalid_signatures_per_second() -> u32 {
    20
}
fn default_epoch_poll_interval_ms() -> u64 {
    1_000
}
fn default_decision_cache_max_entries() -> usize {
    10_000
}
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

/// Where a URL points, split for a callout: `:authority` and `:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

impl Target {
    /// Parses `http(s)://authority/path?query`. Only what a callout needs.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("{url:?} is not an http or https URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(format!("{url:?} has no usable host"));
        }
        Ok(Target {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

impl Settings {
    /// Parses and checks the whole document; the error names the field.
    pub fn from_json(bytes: &[u8]) -> Result<Settings, String> {
        let settings: Settings = serde_json::from_slice(bytes)
            .map_err(|e| format!("filter configuration is invalid: {e}"))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        let bad =
            |field: &str, why: String| Err(format!("filter configuration field `{field}`: {why}"));
        if let Err(e) = Target::parse(&self.oidc_discovery_url) {
            return bad("oidc_discovery_url", e);
        }
        if self.oidc_audience.is_empty() || self.oidc_audience.iter().any(|a| a.is_empty()) {
            return bad(
                "oidc_audience",
                "needs at least one non-empty audience".into(),
            );
        }
        if self.oidc_username_field.is_empty() {
            return bad(
                "oidc_username_field",
                "needs at least one claim name".into(),
            );
        }
        if self.allowed_algorithms.is_empty() {
            return bad("allowed_algorithms", "needs at least one algorithm".into());
        }
        for alg in &self.allowed_algorithms {
            if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                return bad(
                    "allowed_algorithms",
                    format!(
                        "{alg:?} is not accepted; choose from {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if self.clock_skew_seconds > 300 {
            return bad("clock_skew_seconds", "must be at most 300".into());
        }
        if !is_token(&self.session_cookie_name) {
            return bad(
                "session_cookie_name",
                "must be a cookie name (letters, digits, -_.)".into(),
            );
        }
        if !is_token(&self.identity_header) {
            return bad(
                "identity_header",
                "must be a header name (letters, digits, -_.)".into(),
            );
        }
        if !self.login_path.starts_with('/') {
            return bad("login_path", "must be a path starting with /".into());
        }
        if self
            .public_paths
            .iter()
            .any(|p| !p.starts_with('/') || p == "/")
        {
            return bad(
                "public_paths",
                "each must start with / and be more than /".into(),
            );
        }
        if self.callout_timeout_ms == 0 || self.callout_timeout_ms > 60_000 {
            return bad("callout_timeout_ms", "must be between 1 and 60000".into());
        }
        if self.access_token_cache_seconds > 3600 {
            return bad("access_token_cache_seconds", "must be at most 3600".into());
        }
        if !(100..=60_000).contains(&self.epoch_poll_interval_ms) {
            return bad(
                "epoch_poll_interval_ms",
                "must be between 100 and 60000".into(),
            );
        }
        if self.decision_cache_max_entries == 0 {
            return bad("decision_cache_max_entries", "must be at least 1".into());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return bad("max_body_bytes", "must be between 1024 and 67108864".into());
        }
        if self.token_cache_max_entries == 0 {
            return bad("token_cache_max_entries", "must be at least 1".into());
        }
        Ok(())
    }

    /// The request path (query excluded) needs no credentials.
    pub fn is_public(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.public_paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            }
        })
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "oidc_discovery_url": "http://127.0.0.1:9400/.well-known/openid-configuration",
            "oidc_audience": ["mlflow"]
        })
    }

    fn parse(v: serde_json::Value) -> Result<Settings, String> {
        Settings::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_settings_take_safe_defaults() {
        let s = parse(minimal()).unwrap();
        assert_eq!(s.clock_skew_seconds, 30);
        assert!(!s.allowed_algorithms.iter().any(|a| a.starts_with("HS")));
        assert_eq!(s.identity_header, "x-forwarded-user");
        assert_eq!(s.oidc_username_field, ["email", "preferred_username"]);
    }

    #[test]
    fn unknown_field_is_named() {
        let mut v = minimal();
        v["oidc_audiences"] = serde_json::json!(["x"]);
        let err = parse(v).unwrap_err();
        assert!(err.contains("oidc_audiences"), "{err}");
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let err = parse(serde_json::json!({"oidc_audience": ["m"]})).unwrap_err();
        assert!(err.contains("oidc_discovery_url"), "{err}");
        for (field, value) in [
            ("allowed_algorithms", serde_json::json!(["HS256"])),
            ("allowed_algorithms", serde_json::json!(["none"])),
            ("oidc_audience", serde_json::json!([])),
            ("oidc_discovery_url", serde_json::json!("ftp://idp/x")),
            ("clock_skew_seconds", serde_json::json!(3600)),
            ("identity_header", serde_json::json!("x user")),
            ("clock_skew_seconds", serde_json::json!("ten")),
        ] {
            let mut v = minimal();
            v[field] = value;
            let err = parse(v).unwrap_err();
            assert!(
                err.contains(field) || err.contains("invalid type"),
                "{field}: {err}"
            );
        }
    }

    #[test]
    fn public_paths_match_whole_segments() {
        let s = parse(minimal()).unwrap();
        assert!(s.is_public("/oidc/login?next=/"));
        assert!(s.is_public("/callback?code=1"));
        assert!(s.is_public("/logout"));
        assert!(!s.is_public("/callbackx"));
        assert!(!s.is_public("/logoutnow"));
        assert!(!s.is_public("/oidc"));
        assert!(!s.is_public("/api/2.0/mlflow/experiments/search"));
    }

    #[test]
    fn targets_split_authority_and_path() {
        let t = Target::parse("http://127.0.0.1:9400/.well-known/openid-configuration").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9400");
        assert_eq!(t.path, "/.well-known/openid-configuration");
        assert_eq!(Target::parse("https://idp.example").unwrap().path, "/");
        assert!(Target::parse("idp.example/x").is_err());
    }
}
