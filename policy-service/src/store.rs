//! All SQL lives here. Runtime-checked queries (`sqlx::query`), so the crate
//! builds without a database; the migrations are embedded in the binary.
//!
//! Only SQLite for now. PostgreSQL will be a second pool variant behind the
//! same methods, with its own migrations directory (`migrations/postgres`).

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use thiserror::Error;

use crate::settings::DatabaseUrl;

/// How long a login attempt (`auth_states` row) stays usable.
pub const AUTH_STATE_TTL_SECONDS: i64 = 15 * 60;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the users database {target}: {source}")]
    Open {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the users database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("users database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    pub nonce: String,
    pub pkce_verifier: String,
    pub next: String,
    pub created_at: i64,
}

/// A server-side session with its user (absent when the user was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user: Option<UserRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

/// A personal access token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessTokenRecord {
    pub id: i64,
    pub name: String,
    pub token_prefix: String,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
}

/// What a token check needs: the row, its hash, and its owner.
#[derive(Debug, Clone)]
pub struct AccessTokenCheck {
    pub id: i64,
    pub token_hash: String,
    pub expires_at: i64,
    pub last_used_at: Option<i64>,
    pub user: UserRecord,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating when missing) and migrates the database.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let pool = match url {
            DatabaseUrl::SqliteFile(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(|source| StoreError::Open {
                        target: path.display().to_string(),
                        source,
                    })?
            }
            DatabaseUrl::SqliteMemory => {
                // One connection that never closes: the database lives as long as it does.
                let options = SqliteConnectOptions::new()
                    .in_memory(true)
                    .foreign_keys(true);
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(|source| StoreError::Open {
                        target: "in memory".into(),
                        source,
                    })?
            }
        };
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- login attempts -------------------------------------------------

    /// Records a login attempt, and drops attempts that can no longer be used.
    pub async fn insert_auth_state(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        next: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM auth_states WHERE created_at < ?")
            .bind(now - AUTH_STATE_TTL_SECONDS)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO auth_states (state, nonce, pkce_verifier, next, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(state)
        .bind(nonce)
        .bind(pkce_verifier)
        .bind(next)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a login attempt: at most one caller ever gets it, and only
    /// within its time to live.
    pub async fn take_auth_state(
        &self,
        state: &str,
        now: i64,
    ) -> Result<Option<AuthState>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM auth_states WHERE state = ? \
             RETURNING nonce, pkce_verifier, next, created_at",
        )
        .bind(state)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let auth_state = AuthState {
            nonce: row.try_get("nonce")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            next: row.try_get("next")?,
            created_at: row.try_get("created_at")?,
        };
        if now - auth_state.created_at > AUTH_STATE_TTL_SECONDS || auth_state.created_at > now + 60
        {
            return Ok(None);
        }
        Ok(Some(auth_state))
    }

    // ---- users and groups -----------------------------------------------

    /// Creates or updates the user at sign-in (admin flag recomputed, so losing
    /// the admin group demotes), and replaces their group memberships with
    /// `groups`. Returns the user's id.
    pub async fn record_login(
        &self,
        username: &str,
        display_name: &str,
        is_admin: bool,
        groups: &[String],
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user_id: i64 = sqlx::query(
            "INSERT INTO users (username, display_name, is_admin, created_at, last_login_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (username) DO UPDATE SET \
               display_name = excluded.display_name, \
               is_admin = excluded.is_admin, \
               last_login_at = excluded.last_login_at \
             RETURNING id",
        )
        .bind(username)
        .bind(display_name)
        .bind(is_admin)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;

        sqlx::query("DELETE FROM user_groups WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for group in groups {
            sqlx::query(
                "INSERT INTO groups (group_name) VALUES (?) ON CONFLICT (group_name) DO NOTHING",
            )
            .bind(group)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO user_groups (user_id, group_id) \
                 SELECT ?, id FROM groups WHERE group_name = ? \
                 ON CONFLICT (user_id, group_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(group)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(user_id)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, display_name, is_admin FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(UserRecord {
                id: row.try_get("id")?,
                username: row.try_get("username")?,
                display_name: row.try_get("display_name")?,
                is_admin: row.try_get("is_admin")?,
            })
        })
        .transpose()
    }

    /// The user's group names, sorted.
    pub async fn user_groups(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.group_name FROM user_groups ug JOIN groups g ON g.id = ug.group_id \
             WHERE ug.user_id = ? ORDER BY g.group_name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| row.try_get("group_name").map_err(StoreError::from))
            .collect()
    }

    pub async fn delete_user(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- access tokens ----------------------------------------------------

    /// Drops the user's expired tokens; then the number of live ones.
    pub async fn purge_and_count_tokens(&self, user_id: i64, now: i64) -> Result<i64, StoreError> {
        sqlx::query("DELETE FROM access_tokens WHERE user_id = ? AND expires_at <= ?")
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM access_tokens WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_token(
        &self,
        user_id: i64,
        name: &str,
        prefix: &str,
        token_hash: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<AccessTokenRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO access_tokens (user_id, name, prefix, token_hash, created_at, created_by, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(user_id)
        .bind(name)
        .bind(prefix)
        .bind(token_hash)
        .bind(now)
        .bind(created_by)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(AccessTokenRecord {
            id: row.try_get("id")?,
            name: name.to_string(),
            token_prefix: prefix.to_string(),
            created_at: now,
            created_by: created_by.to_string(),
            expires_at,
            last_used_at: None,
        })
    }

    /// The user's tokens, newest first.
    pub async fn tokens(&self, user_id: i64) -> Result<Vec<AccessTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, created_by, expires_at, last_used_at \
             FROM access_tokens WHERE user_id = ? ORDER BY created_at DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AccessTokenRecord {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    token_prefix: row.try_get("prefix")?,
                    created_at: row.try_get("created_at")?,
                    created_by: row.try_get("created_by")?,
                    expires_at: row.try_get("expires_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Revokes one of the user's tokens; false when it is not theirs or unknown.
    pub async fn delete_token(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM access_tokens WHERE user_id = ? AND id = ?")
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn token_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<AccessTokenCheck>, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, t.token_hash, t.expires_at, t.last_used_at, \
                    u.id AS user_id, u.username, u.display_name, u.is_admin \
             FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.prefix = ?",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(AccessTokenCheck {
                id: row.try_get("id")?,
                token_hash: row.try_get("token_hash")?,
                expires_at: row.try_get("expires_at")?,
                last_used_at: row.try_get("last_used_at")?,
                user: UserRecord {
                    id: row.try_get("user_id")?,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    is_admin: row.try_get("is_admin")?,
                },
            })
        })
        .transpose()
    }

    /// Records a use, at most one write per token per `every` seconds.
    pub async fn touch_token(&self, id: i64, now: i64, every: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE access_tokens SET last_used_at = ? \
             WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
        )
        .bind(now)
        .bind(id)
        .bind(now - every)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- sessions ---------------------------------------------------------

    pub async fn create_session(
        &self,
        id: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at, \
                    u.id AS uid, u.username, u.display_name, u.is_admin \
             FROM sessions s LEFT JOIN users u ON u.id = s.user_id \
             WHERE s.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let uid: Option<i64> = row.try_get("uid")?;
        let user = match uid {
            Some(uid) => Some(UserRecord {
                id: uid,
                username: row.try_get("username")?,
                display_name: row.try_get("display_name")?,
                is_admin: row.try_get("is_admin")?,
            }),
            None => None,
        };
        Ok(Some(SessionRecord {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            user,
        }))
    }

    /// Revokes a session; false when it was unknown or already revoked.
    pub async fn revoke_session(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- session signing keys ---------------------------------------------

    fn key_row(row: &sqlx::sqlite::SqliteRow) -> Result<SigningKeyRow, StoreError> {
        Ok(SigningKeyRow {
            kid: row.try_get("kid")?,
            private_key: row.try_get("private_key")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// The key new session cookies are signed with: the newest one.
    pub async fn newest_signing_key(&self) -> Result<Option<SigningKeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT kid, private_key, created_at FROM signing_keys \
             ORDER BY created_at DESC, kid DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::key_row).transpose()
    }

    pub async fn signing_key(&self, kid: &str) -> Result<Option<SigningKeyRow>, StoreError> {
        let row =
            sqlx::query("SELECT kid, private_key, created_at FROM signing_keys WHERE kid = ?")
                .bind(kid)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(Self::key_row).transpose()
    }

    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, created_at FROM signing_keys \
             ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::key_row).collect()
    }

    /// Inserts the first signing key, unless another replica got there first
    /// (one statement, so two replicas starting together cannot both insert).
    pub async fn insert_first_signing_key(
        &self,
        kid: &str,
        private_key: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, created_at) \
             SELECT ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(kid)
        .bind(private_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory() -> Store {
        Store::connect(&DatabaseUrl::SqliteMemory).await.unwrap()
    }

    #[tokio::test]
    async fn auth_states_are_single_use_and_expire() {
        let store = memory().await;
        let t = 1_000_000;
        store
            .insert_auth_state("s1", "n1", "v1", "/next", t)
            .await
            .unwrap();
        let got = store.take_auth_state("s1", t + 10).await.unwrap().unwrap();
        assert_eq!(got.nonce, "n1");
        assert_eq!(got.next, "/next");
        assert_eq!(store.take_auth_state("s1", t + 10).await.unwrap(), None);

        store
            .insert_auth_state("s2", "n2", "v2", "/", t)
            .await
            .unwrap();
        assert_eq!(
            store
                .take_auth_state("s2", t + AUTH_STATE_TTL_SECONDS + 1)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn login_upserts_user_and_replaces_groups() {
        let store = memory().await;
        let groups = vec!["mlflow".to_string(), "mlflow-admin".to_string()];
        let id = store
            .record_login("alice@example.com", "Alice", true, &groups, 10)
            .await
            .unwrap();
        assert_eq!(store.user_groups(id).await.unwrap(), groups);
        let again = store
            .record_login("alice@example.com", "Alice", false, &["mlflow".into()], 20)
            .await
            .unwrap();
        assert_eq!(id, again);
        let user = store
            .user_by_name("alice@example.com")
            .await
            .unwrap()
            .unwrap();
        assert!(!user.is_admin, "demoted at the next login");
        assert_eq!(store.user_groups(id).await.unwrap(), vec!["mlflow"]);
    }

    #[tokio::test]
    async fn first_signing_key_is_inserted_once() {
        let store = memory().await;
        store.insert_first_signing_key("a", b"k1", 5).await.unwrap();
        store.insert_first_signing_key("b", b"k2", 6).await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(store.newest_signing_key().await.unwrap().unwrap().kid, "a");
    }
}
