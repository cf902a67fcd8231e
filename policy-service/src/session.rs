//! The session cookie: a compact EdDSA JWS the edge filter verifies inline
//! against the keys published at `wire::SESSION_KEYS_PATH`.
//!
//! The private keys live in the database (`signing_keys`), so every replica that
//! shares the database signs with the same key.

use std::collections::HashSet;

use jwt_simple::prelude::{
    Claims, Duration, Ed25519KeyPair, Ed25519PublicKey, EdDSAKeyPairLike, EdDSAPublicKeyLike,
    JWTClaims, Token, VerificationOptions,
};
use jwt_simple::JWTError;
use mlflow_edge_authz::wire::{self, Jwk, Jwks, SessionClaims};
use thiserror::Error;

use crate::store::{SigningKeyRow, Store, StoreError};

/// Why a session cookie was not accepted. The messages reach the client.
#[derive(Debug, Error)]
pub enum CookieError {
    #[error("session cookie is malformed")]
    Malformed,
    #[error("session cookie was signed by an unknown key")]
    UnknownKey,
    #[error("session cookie signature is invalid")]
    BadSignature,
    #[error("session cookie has expired")]
    Expired,
    #[error("session cookie was not issued for this service")]
    WrongIssuerOrAudience,
    #[error("session cookie is not valid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign the session cookie: {0}")]
    Sign(String),
}

/// The verified content of a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCookie {
    pub username: String,
    pub sid: String,
    pub adm: bool,
    pub expires_at: u64,
}

pub struct SessionKeys {
    signer: Ed25519KeyPair,
    kid: String,
}

fn key_pair(row: &SigningKeyRow) -> Result<Ed25519KeyPair, StoreError> {
    Ed25519KeyPair::from_bytes(&row.private_key)
        .map(|k| k.with_key_id(&row.kid))
        .map_err(|e| {
            StoreError::Query(sqlx::Error::Decode(
                format!("signing key {} is not an Ed25519 key pair: {e}", row.kid).into(),
            ))
        })
}

impl SessionKeys {
    /// Loads the newest signing key, creating the first one when there is none.
    /// Race-safe: when two replicas start together only one insert wins, and both
    /// then read the same newest row.
    pub async fn load_or_create(store: &Store) -> Result<Self, StoreError> {
        if store.newest_signing_key().await?.is_none() {
            let generated = Ed25519KeyPair::generate();
            let kid = wire::base64url_encode(&rand::random::<[u8; 16]>());
            store
                .insert_first_signing_key(&kid, &generated.to_bytes(), crate::store::now())
                .await?;
        }
        let row = store
            .newest_signing_key()
            .await?
            .ok_or_else(|| StoreError::Query(sqlx::Error::RowNotFound))?;
        Ok(SessionKeys {
            signer: key_pair(&row)?,
            kid: row.kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a session cookie for `username`, valid `ttl` seconds from `now` but
    /// never past the server-side session's `session_expires_at`.
    pub fn sign(
        &self,
        username: &str,
        sid: &str,
        adm: bool,
        now: u64,
        ttl: u64,
        session_expires_at: u64,
    ) -> Result<(String, u64), CookieError> {
        let exp = now.saturating_add(ttl).min(session_expires_at);
        let mut claims = Claims::with_custom_claims(
            SessionClaims {
                sid: sid.to_string(),
                adm,
            },
            Duration::from_secs(ttl),
        )
        .with_subject(username)
        .with_issuer(wire::SESSION_ISSUER)
        .with_audience(wire::SESSION_AUDIENCE);
        claims.issued_at = Some(Duration::from_secs(now));
        claims.invalid_before = Some(Duration::from_secs(now));
        claims.expires_at = Some(Duration::from_secs(exp));
        let token = self
            .signer
            .sign(claims)
            .map_err(|e| CookieError::Sign(e.to_string()))?;
        Ok((token, exp))
    }

    async fn public_key(&self, store: &Store, kid: &str) -> Result<Ed25519PublicKey, CookieError> {
        if kid == self.kid {
            return Ok(self.signer.public_key());
        }
        // Another replica may have rotated in a newer key.
        match store.signing_key(kid).await? {
            Some(row) => Ok(key_pair(&row)?.public_key()),
            None => Err(CookieError::UnknownKey),
        }
    }

    /// Verifies a session cookie's signature, issuer and audience, and its `exp`
    /// with `tolerance` seconds of grace (renewal and logout accept an expired
    /// cookie, within limits). `now` is seconds since the epoch.
    pub async fn verify(
        &self,
        store: &Store,
        token: &str,
        now: u64,
        tolerance: u64,
    ) -> Result<VerifiedCookie, CookieError> {
        if token.is_empty() || token.len() > 4096 {
            return Err(CookieError::Malformed);
        }
        let metadata = Token::decode_metadata(token).map_err(|_| CookieError::Malformed)?;
        if metadata.algorithm() != "EdDSA" {
            return Err(CookieError::Malformed);
        }
        let kid = metadata.key_id().ok_or(CookieError::UnknownKey)?;
        let public_key = self.public_key(store, kid).await?;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from([wire::SESSION_ISSUER.to_string()])),
            allowed_audiences: Some(HashSet::from([wire::SESSION_AUDIENCE.to_string()])),
            // Explicit: jwt-simple's default is 15 minutes.
            time_tolerance: Some(Duration::from_secs(tolerance)),
            artificial_time: Some(Duration::from_secs(now)),
            ..VerificationOptions::default()
        };
        let claims: JWTClaims<SessionClaims> = public_key
            .verify_token(token, Some(options))
            .map_err(classify)?;
        let expires_at = claims.expires_at.ok_or(CookieError::Malformed)?.as_secs();
        let username = claims.subject.ok_or(CookieError::Malformed)?;
        Ok(VerifiedCookie {
            username,
            sid: claims.custom.sid,
            adm: claims.custom.adm,
            expires_at,
        })
    }

    /// The public half of every signing key, for the filter.
    pub async fn jwks(&self, store: &Store) -> Result<Jwks, StoreError> {
        let mut keys = Vec::new();
        for row in store.signing_keys().await? {
            let pair = key_pair(&row)?;
            keys.push(Jwk::ed25519(&row.kid, &pair.public_key().to_bytes()));
        }
        Ok(Jwks { keys })
    }
}

fn classify(err: jwt_simple::Error) -> CookieError {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) => CookieError::BadSignature,
        Some(JWTError::TokenHasExpired) => CookieError::Expired,
        Some(
            JWTError::RequiredIssuerMismatch
            | JWTError::RequiredIssuerMissing
            | JWTError::RequiredAudienceMismatch
            | JWTError::RequiredAudienceMissing,
        ) => CookieError::WrongIssuerOrAudience,
        Some(JWTError::CompactEncodingError | JWTError::AlgorithmMismatch) => {
            CookieError::Malformed
        }
        Some(other) => CookieError::Invalid(other.to_string()),
        // Base64 or JSON errors: the token was not produced by us.
        None => CookieError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh_database;

    async fn setup() -> (Store, SessionKeys) {
        let store = Store::connect(&fresh_database()).await.unwrap();
        let keys = SessionKeys::load_or_create(&store).await.unwrap();
        (store, keys)
    }

    #[tokio::test]
    async fn sign_then_verify() {
        let (store, keys) = setup().await;
        let now = crate::store::now() as u64;
        let (token, exp) = keys
            .sign("alice", "sid1", true, now, 300, now + 1000)
            .unwrap();
        assert_eq!(exp, now + 300);
        let v = keys.verify(&store, &token, now, 0).await.unwrap();
        assert_eq!(v.username, "alice");
        assert_eq!(v.sid, "sid1");
        assert!(v.adm);
        assert_eq!(v.expires_at, now + 300);
    }

    #[tokio::test]
    async fn exp_never_passes_the_session() {
        let (_store, keys) = setup().await;
        let (_, exp) = keys.sign("a", "s", false, 1000, 300, 1100).unwrap();
        assert_eq!(exp, 1100);
    }

    #[tokio::test]
    async fn expired_cookie_only_within_tolerance() {
        let (store, keys) = setup().await;
        let now = 10_000_000;
        let (token, _) = keys.sign("a", "s", false, now, 300, now + 86400).unwrap();
        let later = now + 300 + 100;
        assert!(matches!(
            keys.verify(&store, &token, later, 0).await,
            Err(CookieError::Expired)
        ));
        assert!(keys.verify(&store, &token, later, 200).await.is_ok());
        assert!(matches!(
            keys.verify(&store, &token, later, 50).await,
            Err(CookieError::Expired)
        ));
    }

    #[tokio::test]
    async fn tampering_and_garbage_are_refused() {
        let (store, keys) = setup().await;
        let now = 10_000_000;
        let (token, _) = keys.sign("a", "s", false, now, 300, now + 86400).unwrap();
        // Re-sign the payload of another user with a foreign key.
        let foreign = Ed25519KeyPair::generate().with_key_id(keys.kid());
        let claims = Claims::with_custom_claims(
            SessionClaims {
                sid: "s".into(),
                adm: true,
            },
            Duration::from_secs(300),
        )
        .with_subject("a")
        .with_issuer(wire::SESSION_ISSUER)
        .with_audience(wire::SESSION_AUDIENCE);
        let forged = foreign.sign(claims).unwrap();
        assert!(matches!(
            keys.verify(&store, &forged, now, 0).await,
            Err(CookieError::BadSignature)
        ));
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = keys.sign("b", "s", true, now, 300, now + 86400).unwrap().0;
        let other_payload = other.split('.').nth(1).unwrap().to_string();
        parts[1] = &other_payload;
        let spliced = parts.join(".");
        // Different payload under the first signature.
        if spliced != token {
            assert!(matches!(
                keys.verify(&store, &spliced, now, 0).await,
                Err(CookieError::BadSignature)
            ));
        }
        for junk in ["", "abc", "a.b.c", "x.y"] {
            assert!(keys.verify(&store, junk, now, 0).await.is_err(), "{junk}");
        }
    }
}
