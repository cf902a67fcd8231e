//! Secrets at rest (the IdP's refresh tokens on a session): AES-256-GCM under a key
//! derived from `SECRET_KEY`, so every replica that shares it can read them.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use mlflow_edge_authz::wire;

/// Seals and opens small secrets. Output: base64url(nonce || ciphertext || tag).
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub fn new(secret_key: &str) -> Self {
        // A key for this one purpose, never SECRET_KEY itself.
        let key = hmac_sha256::HMAC::mac(
            b"mlflow-edge-authz: session token encryption",
            secret_key.as_bytes(),
        );
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    pub fn seal(&self, plaintext: &str) -> Result<String, String> {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(&nonce.into(), plaintext.as_bytes())
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(wire::base64url_encode(&out))
    }

    /// `Err` when the text was not sealed with this key (or was altered).
    pub fn open(&self, sealed: &str) -> Result<String, String> {
        let bytes = wire::base64url_decode(sealed).ok_or("sealed secret is not base64url")?;
        if bytes.len() < 12 + 16 {
            return Err("sealed secret is too short".into());
        }
        let (nonce, body) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| "sealed secret is too short")?;
        let plain = self
            .cipher
            .decrypt(&nonce.into(), body)
            .map_err(|_| "sealed secret does not open with this SECRET_KEY".to_string())?;
        String::from_utf8(plain).map_err(|_| "sealed secret is not text".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_unaltered() {
        let a = Sealer::new("key-a");
        let sealed = a.seal("refresh-token-123").unwrap();
        assert!(!sealed.contains("refresh-token-123"));
        assert_ne!(
            sealed,
            a.seal("refresh-token-123").unwrap(),
            "fresh nonce each time"
        );
        assert_eq!(a.open(&sealed).unwrap(), "refresh-token-123");
        assert!(Sealer::new("key-b").open(&sealed).is_err());
        let mut altered = sealed.into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(a.open(&String::from_utf8(altered).unwrap()).is_err());
        assert!(a.open("!!").is_err());
        assert!(a.open("AAAA").is_err());
    }
}
