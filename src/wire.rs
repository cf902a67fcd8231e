//! What crosses the wire between the filter, the policy service and MLflow clients.
//! Defined once here; the policy service depends on this crate for it.

use serde::{Deserialize, Serialize};

use crate::permission::{Permission, ResourceKind, Source, Target};

/// The filter proves itself to the policy service's internal API (`/authz/v1/...`)
/// with this header, holding the secret both read from this environment variable
/// (for the filter: the Envoy VM's environment, never its JSON configuration).
pub const SERVICE_KEY_HEADER: &str = "x-authz-key";
pub const SERVICE_KEY_ENV: &str = "AUTHZ_SHARED_KEY";

/// Issuer of the session cookie (the policy service) as written in its `iss` claim.
pub const SESSION_ISSUER: &str = "mlflow-policy-service";
/// Audience of the session cookie: only the edge filter accepts it.
pub const SESSION_AUDIENCE: &str = "mlflow-edge";
/// The policy service's public session-signing keys, as a JWKS. Public, unauthenticated.
pub const SESSION_KEYS_PATH: &str = "/authz/v1/keys";
/// Exchange a still-signed but expired session cookie for a fresh one, while the
/// server-side session lives. Body: [`RenewRequest`]; 200 answer: [`RenewResponse`].
pub const SESSION_RENEW_PATH: &str = "/authz/v1/session/renew";

/// Check a personal access token, as sent by MLflow clients in HTTP Basic
/// (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`). Body: [`BasicCredential`];
/// 200: [`CredentialIdentity`]; 401: [`ErrorBody`] saying why.
pub const BASIC_CHECK_PATH: &str = "/authz/v1/credentials/basic";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicCredential {
    pub username: String,
    pub token: String,
}

/// A bearer token the filter has verified, for a policy service that provisions
/// users on their first bearer call (`OIDC_PROVISION_ON_BEARER_AUTH`): the service
/// trusts these claims because the call carries [`SERVICE_KEY_HEADER`].
/// 200: [`CredentialIdentity`]; 401: [`ErrorBody`] (the user may not sign in).
pub const BEARER_CHECK_PATH: &str = "/authz/v1/credentials/bearer";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BearerCredential {
    /// The username the filter derived (`OIDC_USERNAME_FIELD`).
    pub username: String,
    /// The token itself, for group detectors that call the IdP with it (Graph).
    pub token: String,
    /// Every claim of the verified token but the registered ones.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Who a credential speaks for, as the policy service found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialIdentity {
    pub username: String,
    #[serde(default)]
    pub admin: bool,
    /// When the credential stops being valid, seconds since the epoch: the filter
    /// never caches the answer beyond it.
    pub expires_at: u64,
}

/// Custom claims of the session cookie, a compact EdDSA JWS signed by the policy
/// service. Standard claims: `sub` = username, `iss` = [`SESSION_ISSUER`],
/// `aud` = [`SESSION_AUDIENCE`], `iat`, `exp` (minutes after `iat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Server-side session id: what logout and renewal act on.
    pub sid: String,
    /// The user is an admin (member of `OIDC_ADMIN_GROUP_NAME` at sign-in).
    #[serde(default)]
    pub adm: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The expired session cookie; its signature is still checked by the service.
    pub session: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    /// The new session cookie value.
    pub session: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The whole `Set-Cookie` header value for the browser (the service owns the
    /// cookie's attributes).
    pub set_cookie: String,
}

/// Decide a request: what the user holds on each target it names. The filter
/// compares each answer with the route's need and caches it per (user, target)
/// under the answer's epoch. Body: [`DecideRequest`]; 200: [`DecideResponse`].
pub const DECIDE_PATH: &str = "/authz/v1/decide";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecideRequest {
    pub username: String,
    /// May be empty: the answer then only says whether the user is an admin.
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecideResponse {
    /// The policy epoch the answers were read at.
    pub epoch: u64,
    /// Admins pass every check; `answers` are then still filled in.
    pub admin: bool,
    /// One per target, in order.
    pub answers: Vec<TargetAnswer>,
}

/// What the user holds on one target, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetAnswer {
    pub permission: Permission,
    pub source: Source,
    /// The resource holding the grants, when the target resolved to one
    /// (the experiment of a run, a registered model or prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResolvedResource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedResource {
    pub kind: ResourceKind,
    /// Experiment id, or registered model / prompt name.
    pub id: String,
}

/// The policy epoch: bumped by every change that can alter a decision (grants,
/// users, groups, admin status). GET; 200: [`EpochResponse`]. The filter polls it
/// and drops its decisions when it moves.
pub const EPOCH_PATH: &str = "/authz/v1/epoch";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochResponse {
    pub epoch: u64,
}

/// Tell the service what a successful MLflow call did to a resource, before the
/// response is released (so the creator's next call already works).
/// Body: [`ResourceEvent`]; 200: [`EpochResponse`].
pub const EVENTS_PATH: &str = "/authz/v1/events";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ResourceEvent {
    /// The creator gets MANAGE; `DEFAULT_MLFLOW_GROUP_PERMISSION` goes to their groups.
    Created {
        kind: ResourceKind,
        id: String,
        creator: String,
    },
    /// Grants move from the old name to the new one.
    Renamed {
        kind: ResourceKind,
        from: String,
        to: String,
    },
    /// Grants on the resource are removed.
    Deleted { kind: ResourceKind, id: String },
}

/// Filter a search or list response down to what the user may read, topping the
/// page up from MLflow so it holds `max_results` rows when more readable rows exist.
/// Body: [`ListingRequest`]; 200: the filtered MLflow response body, verbatim JSON.
pub const LISTING_PATH: &str = "/authz/v1/listing";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRequest {
    pub username: String,
    pub listing: Listing,
    /// The client's request to MLflow, so the service can fetch further pages of
    /// the same search: method, path (with `/api` prefix), query string, body.
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// MLflow's answer to it.
    pub response_body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listing {
    Experiments,
    RegisteredModels,
    ModelVersions,
    LoggedModels,
    /// `GET /api/2.0/mlflow-artifacts/artifacts` at the root: one entry per experiment.
    ArtifactRoot,
    /// A `/graphql` answer: in every array under a key `modelVersions` (a run's
    /// model versions), only the versions of registered models the user may read.
    /// No paging.
    GraphqlModelVersions,
}

/// A JSON Web Key Set (RFC 7517), as the IdP and the policy service publish it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One JSON Web Key. Only the members the filter uses; others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC x coordinate or OKP public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl Jwk {
    /// An Ed25519 public key (`kty: OKP`), as the policy service publishes its session key.
    pub fn ed25519(kid: &str, public_key: &[u8]) -> Self {
        Jwk {
            kty: "OKP".into(),
            kid: Some(kid.into()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            crv: Some("Ed25519".into()),
            x: Some(base64url_encode(public_key)),
            ..Jwk::default()
        }
    }
}

/// The subset of an OpenID Provider's discovery document the filter reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
}

/// MLflow's error body, so MLflow clients show our refusals as they show MLflow's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error_code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error_code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error_code: error_code.into(),
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising two strings cannot fail; the fallback keeps the shape anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"error_code":"INTERNAL_ERROR","message":"error"}"#)
        })
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 7515 §2).
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Strict unpadded base64url: `None` on any other character, on padding, or on
/// a length no encoder produces.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero, as a canonical encoder leaves them.
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect();
            let text = base64url_encode(&bytes);
            assert!(!text.contains('='));
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
    }

    #[test]
    fn base64url_refuses_other_alphabets_and_padding() {
        assert_eq!(base64url_decode("ab+/"), None);
        assert_eq!(base64url_decode("YQ=="), None);
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("YR"), None, "non-zero trailing bits");
        assert_eq!(base64url_decode("YQ"), Some(b"a".to_vec()));
    }

    #[test]
    fn error_body_has_mlflow_shape() {
        let body = ErrorBody::new("UNAUTHENTICATED", "no credentials").to_json();
        assert_eq!(
            body,
            r#"{"error_code":"UNAUTHENTICATED","message":"no credentials"}"#
        );
    }
}
