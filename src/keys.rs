//! Verification keys from a JWKS (the IdP's, or the policy service's session keys).

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::wire::{base64url_decode, Jwk, Jwks};

/// A public key bound to one algorithm.
#[derive(Debug, Clone)]
pub enum Verifier {
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    EdDSA(Ed25519PublicKey),
}

impl Verifier {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Verifier::RS256(_) => "RS256",
            Verifier::RS384(_) => "RS384",
            Verifier::RS512(_) => "RS512",
            Verifier::PS256(_) => "PS256",
            Verifier::PS384(_) => "PS384",
            Verifier::PS512(_) => "PS512",
            Verifier::ES256(_) => "ES256",
            Verifier::ES384(_) => "ES384",
            Verifier::EdDSA(_) => "EdDSA",
        }
    }

    /// Checks the signature (and, through `options`, the standard claims).
    pub fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<Map<String, Value>>, jwt_simple::Error> {
        let o = Some(options);
        match self {
            Verifier::RS256(k) => k.verify_token(token, o),
            Verifier::RS384(k) => k.verify_token(token, o),
            Verifier::RS512(k) => k.verify_token(token, o),
            Verifier::PS256(k) => k.verify_token(token, o),
            Verifier::PS384(k) => k.verify_token(token, o),
            Verifier::PS512(k) => k.verify_token(token, o),
            Verifier::ES256(k) => k.verify_token(token, o),
            Verifier::ES384(k) => k.verify_token(token, o),
            Verifier::EdDSA(k) => k.verify_token(token, o),
        }
    }
}

/// One key of the set: its `kid` (if any) and a verifier per algorithm it may sign with.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub verifiers: Vec<Verifier>,
}

/// The usable keys of a JWKS. Keys that cannot verify (encryption keys, unknown
/// types, algorithms outside the allow-list) are left out, not fatal.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    pub fn from_json(bytes: &[u8], allowed: &[String]) -> Result<KeySet, String> {
        let jwks: Jwks =
            serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        Ok(Self::from_jwks(&jwks, allowed))
    }

    pub fn from_jwks(jwks: &Jwks, allowed: &[String]) -> KeySet {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                let verifiers = verifiers_for(k, allowed);
                (!verifiers.is_empty()).then(|| Key {
                    kid: k.kid.clone(),
                    verifiers,
                })
            })
            .collect();
        KeySet { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The verifier for a token's `kid` and `alg`. A token without `kid` may use
    /// the only key that fits its algorithm.
    pub fn find(&self, kid: Option<&str>, alg: &str) -> Option<&Verifier> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .filter_map(|k| k.verifiers.iter().find(|v| v.algorithm() == alg));
        let first = candidates.next();
        if kid.is_none() && candidates.next().is_some() {
            return None; // ambiguous without a kid
        }
        first
    }
}

fn verifiers_for(jwk: &Jwk, allowed: &[String]) -> Vec<Verifier> {
    let wants = |alg: &str| {
        allowed.iter().any(|a| a == alg) && jwk.alg.as_deref().is_none_or(|pinned| pinned == alg)
    };
    let b = |field: &Option<String>| field.as_deref().and_then(base64url_decode);
    let mut out = Vec::new();
    match jwk.kty.as_str() {
        "RSA" => {
            let (Some(n), Some(e)) = (b(&jwk.n), b(&jwk.e)) else {
                return out;
            };
            macro_rules! rsa {
                ($alg:literal, $variant:ident, $ty:ty) => {
                    if wants($alg) {
                        if let Ok(k) = <$ty>::from_components(&n, &e) {
                            out.push(Verifier::$variant(k));
                        }
                    }
                };
            }
            rsa!("RS256", RS256, RS256PublicKey);
            rsa!("RS384", RS384, RS384PublicKey);
            rsa!("RS512", RS512, RS512PublicKey);
            rsa!("PS256", PS256, PS256PublicKey);
            rsa!("PS384", PS384, PS384PublicKey);
            rsa!("PS512", PS512, PS512PublicKey);
        }
        "EC" => {
            let (Some(x), Some(y)) = (b(&jwk.x), b(&jwk.y)) else {
                return out;
            };
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(4u8); // SEC1 uncompressed point
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            match jwk.crv.as_deref() {
                Some("P-256") if wants("ES256") => {
                    if let Ok(k) = ES256PublicKey::from_bytes(&point) {
                        out.push(Verifier::ES256(k));
                    }
                }
                Some("P-384") if wants("ES384") => {
                    if let Ok(k) = ES384PublicKey::from_bytes(&point) {
                        out.push(Verifier::ES384(k));
                    }
                }
                _ => {}
            }
        }
        "OKP" if jwk.crv.as_deref() == Some("Ed25519") && wants("EdDSA") => {
            if let Some(Ok(k)) = b(&jwk.x).map(|x| Ed25519PublicKey::from_bytes(&x)) {
                out.push(Verifier::EdDSA(k));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    use crate::settings::ASYMMETRIC_ALGORITHMS;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn all() -> Vec<String> {
        ASYMMETRIC_ALGORITHMS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn ed25519_and_ec_keys_load_and_unusable_ones_are_skipped() {
        let ed = Ed25519KeyPair::generate();
        let ec = ES256KeyPair::generate();
        let ec_point = ec.public_key().public_key().to_bytes_uncompressed();
        let jwks = serde_json::json!({"keys": [
            Jwk::ed25519("ed", &ed.public_key().to_bytes()),
            {"kty": "EC", "crv": "P-256", "kid": "ec",
             "x": crate::wire::base64url_encode(&ec_point[1..33]),
             "y": crate::wire::base64url_encode(&ec_point[33..65])},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}
        ]});
        let set = KeySet::from_json(jwks.to_string().as_bytes(), &all()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["ed", "ec"]);
        assert!(set.find(Some("ed"), "EdDSA").is_some());
        assert!(set.find(Some("ed"), "ES256").is_none());
        assert!(set.find(Some("ec"), "ES256").is_some());
        assert!(set.find(Some("hmac"), "HS256").is_none());
        assert!(set.find(None, "ES256").is_some(), "the only ES256 key");
    }

    #[test]
    fn pinned_alg_and_allow_list_limit_the_verifiers() {
        let ed = Ed25519KeyPair::generate();
        let mut jwk = Jwk::ed25519("ed", &ed.public_key().to_bytes());
        let jwks = Jwks {
            keys: vec![jwk.clone()],
        };
        assert!(KeySet::from_jwks(&jwks, &["RS256".to_string()]).is_empty());
        jwk.alg = Some("ES256".into());
        assert!(KeySet::from_jwks(&Jwks { keys: vec![jwk] }, &all()).is_empty());
    }

    #[test]
    fn garbage_jwks_is_an_error_not_a_panic() {
        let err = KeySet::from_json(b"<html>", &all()).unwrap_err();
        assert!(err.contains("JWKS"), "{err}");
    }
}
