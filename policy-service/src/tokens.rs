//! Personal access tokens: what MLflow clients send as the HTTP Basic password.
//! `mlf_<prefix>_<secret>`; only the prefix (to find the row) and a SHA-256 of the
//! whole token are stored. The token itself is shown once, at creation.

use chrono::{DateTime, NaiveDate};
use mlflow_edge_authz::wire::{self, BasicCredential, CredentialIdentity};
use serde_json::Value;

use crate::store::{Store, StoreError};

pub const DEFAULT_LIFETIME_DAYS: i64 = 365;
pub const MAX_LIFETIME_DAYS: i64 = 366;
pub const MAX_LIVE_PER_USER: i64 = 20;
/// `last_used_at` is written at most this often per token, not on every request.
pub const TOUCH_EVERY_SECONDS: i64 = 60;
const DAY: i64 = 24 * 3600;

pub struct NewToken {
    pub plaintext: String,
    pub prefix: String,
    pub hash: String,
}

pub fn mint() -> NewToken {
    let prefix: String = rand::random::<[u8; 4]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret = wire::base64url_encode(&rand::random::<[u8; 32]>());
    let plaintext = format!("mlf_{prefix}_{secret}");
    let hash = digest(&plaintext);
    NewToken {
        plaintext,
        prefix,
        hash,
    }
}

pub fn digest(token: &str) -> String {
    hmac_sha256::Hash::hash(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The prefix of a well-formed token.
pub fn prefix_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("mlf_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 8 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some(prefix)
}

/// When a new token expires: `expiration` is absent (365 days), a number of days,
/// a date (`2027-01-31`) or an RFC 3339 time; never more than 366 days ahead.
pub fn expires_at(expiration: Option<&Value>, now: i64) -> Result<i64, String> {
    let at = match expiration {
        None | Some(Value::Null) => now + DEFAULT_LIFETIME_DAYS * DAY,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(days) if days >= 1 => now.saturating_add(days.saturating_mul(DAY)),
            _ => {
                return Err(format!(
                    "expiration {n} is not a whole number of days (1 to {MAX_LIFETIME_DAYS})"
                ))
            }
        },
        Some(Value::String(s)) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                t.timestamp()
            } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                d.and_hms_opt(0, 0, 0)
                    .map_or(0, |t| t.and_utc().timestamp())
            } else {
                return Err(format!(
                    "expiration {s:?} is neither a date (YYYY-MM-DD), an RFC 3339 time, nor a number of days"
                ));
            }
        }
        Some(other) => {
            return Err(format!(
                "expiration {other} is neither a date nor a number of days"
            ))
        }
    };
    if at <= now {
        return Err("expiration is in the past".into());
    }
    if at > now + MAX_LIFETIME_DAYS * DAY {
        return Err(format!(
            "expiration is more than {MAX_LIFETIME_DAYS} days ahead"
        ));
    }
    Ok(at)
}

/// Why a credential is refused (the message reaches the client), or a store failure.
pub enum CheckError {
    Refused(&'static str),
    Store(StoreError),
}

impl From<StoreError> for CheckError {
    fn from(e: StoreError) -> Self {
        CheckError::Store(e)
    }
}

/// Checks `username:token` as the filter received it.
pub async fn check(
    store: &Store,
    c: &BasicCredential,
    now: i64,
) -> Result<CredentialIdentity, CheckError> {
    let prefix = prefix_of(&c.token).ok_or(CheckError::Refused("access token is malformed"))?;
    let row = store
        .token_by_prefix(prefix)
        .await?
        .ok_or(CheckError::Refused(
            "access token is unknown or was revoked",
        ))?;
    if row.token_hash != digest(&c.token) {
        return Err(CheckError::Refused(
            "access token is unknown or was revoked",
        ));
    }
    if row.user.username != c.username.to_lowercase() {
        return Err(CheckError::Refused(
            "access token does not belong to this username",
        ));
    }
    if row.expires_at <= now {
        return Err(CheckError::Refused("access token has expired"));
    }
    if row
        .last_used_at
        .is_none_or(|t| t <= now - TOUCH_EVERY_SECONDS)
    {
        store.touch_token(row.id, now, TOUCH_EVERY_SECONDS).await?;
    }
    Ok(CredentialIdentity {
        username: row.user.username,
        admin: row.user.is_admin,
        expires_at: u64::try_from(row.expires_at).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn minted_tokens_have_a_findable_prefix_and_are_stored_as_a_digest() {
        let t = mint();
        assert_eq!(prefix_of(&t.plaintext), Some(t.prefix.as_str()));
        assert_eq!(t.hash, digest(&t.plaintext));
        assert!(!t.hash.contains(&t.plaintext[13..]));
        assert_ne!(mint().plaintext, t.plaintext);
        for bad in [
            "",
            "mlf_",
            "mlf_1234_x",
            "mlf_zzzzzzzz_x",
            "abc_12345678_x",
            "mlf_12345678_",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn expiration_defaults_to_a_year_and_is_capped() {
        let now = 1_800_000_000;
        assert_eq!(expires_at(None, now), Ok(now + 365 * DAY));
        assert_eq!(expires_at(Some(&json!(30)), now), Ok(now + 30 * DAY));
        assert_eq!(expires_at(Some(&json!(366)), now), Ok(now + 366 * DAY));
        assert!(expires_at(Some(&json!(367)), now)
            .unwrap_err()
            .contains("366"));
        assert!(expires_at(Some(&json!(0)), now).is_err());
        assert!(expires_at(Some(&json!("2020-01-01")), now)
            .unwrap_err()
            .contains("past"));
        assert_eq!(
            expires_at(Some(&json!("2027-01-16")), now),
            Ok(1_800_057_600)
        );
        assert_eq!(
            expires_at(Some(&json!("2027-01-15T12:00:00Z")), now),
            Ok(1_800_014_400)
        );
        assert!(expires_at(Some(&json!("next week")), now)
            .unwrap_err()
            .contains("next week"));
    }
}
