//! Verifying a compact JWS: the cheap checks first (shape, algorithm, issuer,
//! audience, time), then the signature, which costs about 0.5 ms in wasm.

use std::collections::HashSet;
use std::fmt;

use jwt_simple::prelude::{Duration, UnixTimeStamp, VerificationOptions};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::KeySet;
use crate::wire::base64url_decode;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. Messages are lower-case and name the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    TooLong,
    AlgorithmNotAllowed(String),
    WrongIssuer(String),
    WrongAudience,
    Expired,
    NotYetValid,
    NoExpiry,
    /// No key with this `kid`: the caller may refetch the key set once.
    UnknownKey(String),
    BadSignature(String),
    NoUsername(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "token is malformed: {why}"),
            TokenError::TooLong => write!(f, "token is longer than {MAX_TOKEN_BYTES} bytes"),
            TokenError::AlgorithmNotAllowed(alg) => {
                write!(f, "token algorithm {alg:?} is not accepted")
            }
            TokenError::WrongIssuer(iss) => write!(f, "token issuer {iss:?} is not accepted"),
            TokenError::WrongAudience => write!(f, "token audience is not accepted"),
            TokenError::Expired => write!(f, "token has expired"),
            TokenError::NotYetValid => write!(f, "token is not valid yet"),
            TokenError::NoExpiry => write!(f, "token has no expiry (exp)"),
            TokenError::UnknownKey(kid) => write!(f, "token is signed with an unknown key {kid:?}"),
            TokenError::BadSignature(why) => write!(f, "token signature is invalid: {why}"),
            TokenError::NoUsername(fields) => {
                write!(f, "token carries none of the username claims {fields}")
            }
        }
    }
}

/// What a token claims before anything is verified.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: Option<String>,
    aud: Vec<String>,
    pub exp: Option<u64>,
    nbf: Option<u64>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// Decodes header and claims; never trusts them beyond choosing the checks.
pub fn peek(token: &str) -> Result<Unverified, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header = base64url_decode(h).ok_or(TokenError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let claims = base64url_decode(c).ok_or(TokenError::Malformed("claims are not base64url"))?;
    let claims: RawClaims = serde_json::from_slice(&claims)
        .map_err(|_| TokenError::Malformed("claims are not a JSON object"))?;
    let aud = match claims.aud {
        None => vec![],
        Some(Value::String(a)) => vec![a],
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(TokenError::Malformed("aud holds a non-string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenError::Malformed("aud is neither a string nor a list")),
    };
    let time = |t: Option<f64>| match t {
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(t as u64)),
        Some(_) => Err(TokenError::Malformed(
            "a time claim is not a positive number",
        )),
        None => Ok(None),
    };
    Ok(Unverified {
        alg: header.alg,
        kid: header.kid,
        iss: claims.iss,
        aud,
        exp: time(claims.exp)?,
        nbf: time(claims.nbf)?,
    })
}

/// What a verified token must satisfy.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub algorithms: &'a [String],
    pub skew_seconds: u64,
}

impl Policy<'_> {
    /// The checks that need no key. `grace` extends the expiry check only (session
    /// renewal looks at a recently expired cookie).
    pub fn check_claims(&self, t: &Unverified, now: u64, grace: u64) -> Result<(), TokenError> {
        if !self.algorithms.contains(&t.alg) {
            return Err(TokenError::AlgorithmNotAllowed(t.alg.clone()));
        }
        match &t.iss {
            Some(iss) if iss == self.issuer => {}
            Some(iss) => return Err(TokenError::WrongIssuer(iss.clone())),
            None => return Err(TokenError::WrongIssuer(String::new())),
        }
        if !t.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        let exp = t.exp.ok_or(TokenError::NoExpiry)?;
        if now >= exp.saturating_add(self.skew_seconds).saturating_add(grace) {
            return Err(TokenError::Expired);
        }
        if t.nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.skew_seconds))
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    /// The full check: claims, key, signature. Returns the verified claims.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
        grace: u64,
    ) -> Result<(Unverified, JwtClaims), TokenError> {
        let t = peek(token)?;
        self.check_claims(&t, now, grace)?;
        let verifier = keys
            .find(t.kid.as_deref(), &t.alg)
            .ok_or_else(|| TokenError::UnknownKey(t.kid.clone().unwrap_or_default()))?;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([self.issuer.to_string()])),
            allowed_audiences: Some(self.audiences.iter().cloned().collect()),
            time_tolerance: Some(Duration::from_secs(self.skew_seconds + grace)),
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        };
        let claims = verifier
            .verify(token, options)
            .map_err(|e| TokenError::BadSignature(e.to_string().to_lowercase()))?;
        Ok((
            t,
            JwtClaims {
                sub: claims.subject,
                custom: claims.custom,
            },
        ))
    }
}

/// The claims a verified token carries that the filter reads.
#[derive(Debug, Clone)]
pub struct JwtClaims {
    pub sub: Option<String>,
    pub custom: Map<String, Value>,
}

impl JwtClaims {
    /// The username by `OIDC_USERNAME_FIELD`: the rule of [`crate::claims::username_by`].
    pub fn username(&self, fields: &[String]) -> Result<String, TokenError> {
        crate::claims::username_by(fields, |f| {
            if f == "sub" {
                self.sub.as_deref()
            } else {
                self.custom.get(f).and_then(Value::as_str)
            }
        })
        .map_err(|e| TokenError::NoUsername(e.fields))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    // Plain #[test] runs natively; on wasm32 this makes it a wasm-bindgen test (run in node).
    use super::*;
    use crate::wire::{base64url_encode, Jwk, Jwks};
    use jwt_simple::prelude::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    pub const NOW: u64 = 1_800_000_000;
    pub const ISS: &str = "http://idp.test";

    pub fn audiences() -> Vec<String> {
        vec!["mlflow".to_string()]
    }

    pub fn algorithms() -> Vec<String> {
        crate::settings::ASYMMETRIC_ALGORITHMS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub struct Idp {
        pub key: Ed25519KeyPair,
        pub keys: KeySet,
    }

    impl Idp {
        pub fn new(kid: &str) -> Idp {
            let key = Ed25519KeyPair::generate().with_key_id(kid);
            let jwks = Jwks {
                keys: vec![Jwk::ed25519(kid, &key.public_key().to_bytes())],
            };
            let keys = KeySet::from_jwks(&jwks, &algorithms());
            Idp { key, keys }
        }

        pub fn token(&self, claims: serde_json::Value) -> String {
            let mut c = Claims::with_custom_claims(claims, Duration::from_secs(600));
            c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
            c.invalid_before = None;
            c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
            self.key
                .sign(
                    c.with_issuer(ISS)
                        .with_audience("mlflow")
                        .with_subject("u-1"),
                )
                .unwrap()
        }
    }

    fn policy<'a>(aud: &'a [String], algs: &'a [String]) -> Policy<'a> {
        Policy {
            issuer: ISS,
            audiences: aud,
            algorithms: algs,
            skew_seconds: 5,
        }
    }

    /// Re-encodes a token's claims (keeping header and signature): a forgery.
    pub fn with_claims(token: &str, claims: serde_json::Value) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            base64url_encode(claims.to_string().as_bytes()),
            parts[2]
        )
    }

    #[test]
    fn a_valid_token_yields_its_username() {
        let idp = Idp::new("k1");
        let (aud, algs) = (audiences(), algorithms());
        let token = idp.token(serde_json::json!({"email": "Alice@Example.com"}));
        let (_, claims) = policy(&aud, &algs)
            .verify(&token, &idp.keys, NOW + 1, 0)
            .unwrap();
        let fields = vec!["email".to_string(), "preferred_username".to_string()];
        assert_eq!(claims.username(&fields).unwrap(), "alice@example.com");
        let only_pref = vec!["preferred_username".to_string()];
        assert!(claims
            .username(&only_pref)
            .unwrap_err()
            .to_string()
            .contains("preferred_username"));
        assert_eq!(claims.username(&["sub".to_string()]).unwrap(), "u-1");
    }

    #[test]
    fn time_is_checked_with_the_configured_skew_only() {
        let idp = Idp::new("k1");
        let (aud, algs) = (audiences(), algorithms());
        let token = idp.token(serde_json::json!({"email": "a@x"}));
        let p = policy(&aud, &algs);
        assert!(
            p.verify(&token, &idp.keys, NOW + 600 + 4, 0).is_ok(),
            "within skew"
        );
        assert_eq!(
            p.verify(&token, &idp.keys, NOW + 600 + 5, 0).unwrap_err(),
            TokenError::Expired
        );
        // jwt-simple alone would accept this for 15 minutes; the explicit tolerance must win.
        assert_eq!(
            p.verify(&token, &idp.keys, NOW + 600 + 60, 0).unwrap_err(),
            TokenError::Expired
        );
        assert!(
            p.verify(&token, &idp.keys, NOW + 600 + 60, 3600).is_ok(),
            "renewal grace"
        );
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused_with_a_reason() {
        let idp = Idp::new("k1");
        let (aud, algs) = (audiences(), algorithms());
        let p = policy(&aud, &algs);
        let good = idp.token(serde_json::json!({"email": "a@x"}));

        let other = Idp::new("k1").token(serde_json::json!({"email": "a@x"}));
        assert!(matches!(
            p.verify(&other, &idp.keys, NOW, 0),
            Err(TokenError::BadSignature(_))
        ));

        let unknown = Idp::new("k2").token(serde_json::json!({"email": "a@x"}));
        assert_eq!(
            p.verify(&unknown, &idp.keys, NOW, 0).unwrap_err(),
            TokenError::UnknownKey("k2".into())
        );

        let tampered = with_claims(
            &good,
            serde_json::json!({"iss": ISS, "aud": "mlflow", "exp": NOW + 600, "email": "admin@x"}),
        );
        assert!(matches!(
            p.verify(&tampered, &idp.keys, NOW, 0),
            Err(TokenError::BadSignature(_))
        ));

        let wrong_iss = with_claims(
            &good,
            serde_json::json!({"iss": "http://evil", "aud": "mlflow", "exp": NOW + 600}),
        );
        assert!(p
            .verify(&wrong_iss, &idp.keys, NOW, 0)
            .unwrap_err()
            .to_string()
            .contains("issuer"));

        let wrong_aud = with_claims(
            &good,
            serde_json::json!({"iss": ISS, "aud": ["other"], "exp": NOW + 600}),
        );
        assert_eq!(
            p.verify(&wrong_aud, &idp.keys, NOW, 0).unwrap_err(),
            TokenError::WrongAudience
        );

        let no_exp = with_claims(&good, serde_json::json!({"iss": ISS, "aud": "mlflow"}));
        assert_eq!(
            p.verify(&no_exp, &idp.keys, NOW, 0).unwrap_err(),
            TokenError::NoExpiry
        );

        let body = good.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{}.",
            base64url_encode(br#"{"alg":"none","typ":"JWT"}"#),
            body
        );
        assert_eq!(
            p.verify(&none, &idp.keys, NOW, 0).unwrap_err(),
            TokenError::AlgorithmNotAllowed("none".into())
        );

        let hmac = HS256Key::from_bytes(b"public key pem").with_key_id("k1");
        let c = Claims::create(Duration::from_secs(60))
            .with_issuer(ISS)
            .with_audience("mlflow");
        let hs = hmac.authenticate(c).unwrap();
        assert_eq!(
            p.verify(&hs, &idp.keys, NOW, 0).unwrap_err(),
            TokenError::AlgorithmNotAllowed("HS256".into())
        );

        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            &"x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(p.verify(junk, &idp.keys, NOW, 0).is_err(), "{junk:?}");
        }
    }
}
