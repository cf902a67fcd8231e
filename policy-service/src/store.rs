//! All SQL lives here. Runtime-checked queries (`sqlx::query`), so the crate
//! builds without a database; the migrations are embedded in the binary.
//!
//! Two backends, SQLite and PostgreSQL, behind the same methods. Each query is
//! written once: `$1`-style placeholders (which sqlx's SQLite driver reads as
//! well), `RETURNING` and `ON CONFLICT` (both have them), booleans bound as
//! `bool` (an `INTEGER` 0/1 in SQLite, a `BOOLEAN` in PostgreSQL), times as
//! integer unix seconds (`INTEGER` / `BIGINT`). `on_pool!` compiles a method's
//! body once per backend. Only the first signing key's insert differs (a
//! PostgreSQL advisory lock). Each backend has its own migrations directory
//! (`migrations/sqlite`, `migrations/postgres`), embedded with `sqlx::migrate!`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use thiserror::Error;

use crate::settings::DatabaseUrl;

/// How long a login attempt (`auth_states` row) stays usable.
pub const AUTH_STATE_TTL_SECONDS: i64 = 15 * 60;

/// PostgreSQL advisory lock that serializes the first signing key's insert
/// between replicas ("mlflowk1").
const FIRST_SIGNING_KEY_LOCK: i64 = 0x6d6c_666c_6f77_6b31;

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
    /// A value the schema's checks should have kept out (a permission level, a kind).
    #[error("the users database holds an unreadable value: {0}")]
    Invalid(String),
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    /// The IdP grant renewal refreshes (`OIDC_USE_REFRESH_TOKEN`), if any.
    pub grant: Option<IdpGrant>,
}

/// What a session keeps of the IdP: the user's `sub`, and the refresh token sealed
/// (`crate::crypto::Sealer`). Never the token in clear.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdpGrant {
    pub subject: String,
    pub sealed_refresh_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

/// A personal access token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
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

/// `sessions` LEFT JOIN `users`, flat.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: i64,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    idp_subject: Option<String>,
    idp_refresh_token: Option<String>,
    uid: Option<i64>,
    username: Option<String>,
    display_name: Option<String>,
    is_admin: Option<bool>,
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> Self {
        let user = match (row.uid, row.username, row.display_name, row.is_admin) {
            (Some(id), Some(username), Some(display_name), Some(is_admin)) => Some(UserRecord {
                id,
                username,
                display_name,
                is_admin,
            }),
            _ => None,
        };
        SessionRecord {
            id: row.id,
            user_id: row.user_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            user,
            grant: match (row.idp_subject, row.idp_refresh_token) {
                (Some(subject), Some(sealed_refresh_token)) => Some(IdpGrant {
                    subject,
                    sealed_refresh_token,
                }),
                _ => None,
            },
        }
    }
}

/// `access_tokens` JOIN `users`, flat.
#[derive(sqlx::FromRow)]
struct TokenCheckRow {
    id: i64,
    token_hash: String,
    expires_at: i64,
    last_used_at: Option<i64>,
    user_id: i64,
    username: String,
    display_name: String,
    is_admin: bool,
}

impl From<TokenCheckRow> for AccessTokenCheck {
    fn from(row: TokenCheckRow) -> Self {
        AccessTokenCheck {
            id: row.id,
            token_hash: row.token_hash,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            user: UserRecord {
                id: row.user_id,
                username: row.username,
                display_name: row.display_name,
                is_admin: row.is_admin,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's concrete pool: the body (and
/// its SQL) is written once and compiled for each backend. Other modules of the
/// store layer (`grants`) use it too.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Moves the policy epoch on (`policy_epoch`, one row) and returns the new value.
/// Run in the transaction of the change it announces, so a reader never sees the
/// change under the old epoch.
pub(crate) const BUMP_EPOCH: &str =
    "UPDATE policy_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch";

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl Store {
    /// Opens (creating when missing, for a SQLite file) and migrates the database.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Self::connect_with(url, None).await
    }

    /// Connects and migrates, keeping the migration history in `migrations_table`
    /// (`OIDC_ALEMBIC_VERSION_TABLE`) instead of sqlx's `_sqlx_migrations`.
    pub async fn connect_with(
        url: &DatabaseUrl,
        migrations_table: Option<&str>,
    ) -> Result<Self, StoreError> {
        let named = |mut migrator: sqlx::migrate::Migrator| {
            if let Some(table) = migrations_table {
                migrator.dangerous_set_table_name(table.to_string());
            }
            migrator
        };
        let open_error = |source| StoreError::Open {
            target: url.redacted(),
            source,
        };
        let pool = match url {
            DatabaseUrl::SqliteFile(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .foreign_keys(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                named(sqlx::migrate!("migrations/sqlite"))
                    .run(&pool)
                    .await?;
                Pool::Sqlite(pool)
            }
            DatabaseUrl::SqliteMemory => {
                // One connection that never closes: the database lives as long as it does.
                let options = SqliteConnectOptions::new()
                    .in_memory(true)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                named(sqlx::migrate!("migrations/sqlite"))
                    .run(&pool)
                    .await?;
                Pool::Sqlite(pool)
            }
            DatabaseUrl::Postgres(url) => {
                let options: PgConnectOptions = url.parse().map_err(open_error)?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                // sqlx holds an advisory lock while it migrates: replicas starting
                // together migrate once.
                named(sqlx::migrate!("migrations/postgres"))
                    .run(&pool)
                    .await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
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
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM auth_states WHERE created_at < $1")
                .bind(now - AUTH_STATE_TTL_SECONDS)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO auth_states (state, nonce, pkce_verifier, next, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(state)
            .bind(nonce)
            .bind(pkce_verifier)
            .bind(next)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Consumes a login attempt: at most one caller ever gets it, and only
    /// within its time to live.
    pub async fn take_auth_state(
        &self,
        state: &str,
        now: i64,
    ) -> Result<Option<AuthState>, StoreError> {
        let sql = "DELETE FROM auth_states WHERE state = $1 \
                   RETURNING nonce, pkce_verifier, next, created_at";
        let auth_state: Option<AuthState> = on_pool!(self, |pool| {
            sqlx::query_as(sql).bind(state).fetch_optional(pool).await?
        });
        let Some(auth_state) = auth_state else {
            return Ok(None);
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
    /// `groups`. Returns the user's id. A change of admin status or of group
    /// membership (a new user with groups included) moves the policy epoch.
    pub async fn record_login(
        &self,
        username: &str,
        display_name: &str,
        is_admin: bool,
        groups: &[String],
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut wanted: Vec<&str> = groups.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Write first (SQLite cannot turn a reading transaction into a writing one
            // while another writes). This statement leaves `is_admin` as it was, and a
            // new user starts as no admin: it returns the flag from before the login.
            let (user_id, was_admin): (i64, bool) = sqlx::query_as(
                "INSERT INTO users (username, display_name, is_admin, created_at, last_login_at) \
                 VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (username) DO UPDATE SET last_login_at = excluded.last_login_at \
                 RETURNING id, is_admin",
            )
            .bind(username)
            .bind(display_name)
            .bind(false)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE users SET display_name = $1, is_admin = $2 WHERE id = $3")
                .bind(display_name)
                .bind(is_admin)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let groups_before: Vec<String> = sqlx::query_scalar(
                "SELECT g.group_name FROM user_groups ug JOIN groups g ON g.id = ug.group_id \
                 WHERE ug.user_id = $1",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut sorted_before: Vec<&str> = groups_before.iter().map(String::as_str).collect();
            sorted_before.sort_unstable();
            let changed = was_admin != is_admin || sorted_before != wanted;

            sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            // In one order (sorted), so two first sign-ins bringing the same new groups
            // never wait on each other's inserts in a cycle.
            for group in &wanted {
                sqlx::query(
                    "INSERT INTO groups (group_name) VALUES ($1) \
                     ON CONFLICT (group_name) DO NOTHING",
                )
                .bind(group)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO user_groups (user_id, group_id) \
                     SELECT $1, id FROM groups WHERE group_name = $2 \
                     ON CONFLICT (user_id, group_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(group)
                .execute(&mut *tx)
                .await?;
            }
            if changed {
                sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(user_id)
        })
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = "SELECT id, username, display_name, is_admin FROM users \
                   WHERE username = $1 AND active";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(username)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// An active user who has been through the sign-in gate (a browser sign-in or a
    /// provisioned bearer call), as opposed to a row made because a grant named them.
    pub async fn admitted_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = "SELECT id, username, display_name, is_admin FROM users \
                   WHERE username = $1 AND active AND last_login_at IS NOT NULL";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(username)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Deactivates or reactivates a user (by name, whatever their state); the user's
    /// id, or `None` when there is no such user. Deactivated users are invisible to
    /// every lookup that lets someone in (`user_by_name`, sessions, access tokens),
    /// and hold no permission. A change moves the policy epoch.
    pub async fn set_user_active(
        &self,
        username: &str,
        active: bool,
        actor: &str,
    ) -> Result<Option<i64>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let changed: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET active = $1 WHERE username = $2 AND active <> $1 RETURNING id",
            )
            .bind(active)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = changed {
                crate::grants::audit!(
                    tx,
                    actor,
                    "user.active",
                    format!("user {username}"),
                    Some(serde_json::json!({ "active": !active }).to_string()),
                    Some(serde_json::json!({ "active": active }).to_string())
                );
                sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
                tx.commit().await?;
                return Ok(Some(id));
            }
            tx.rollback().await?;
            // Unchanged: already in that state, or no such user.
            Ok(
                sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// True when `username` exists and is deactivated.
    pub async fn is_deactivated(&self, username: &str) -> Result<bool, StoreError> {
        let sql = "SELECT id FROM users WHERE username = $1 AND NOT active";
        let row: Option<(i64,)> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.is_some())
    }

    /// Deletes every access token of the user; how many.
    pub async fn delete_user_tokens(&self, user_id: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM access_tokens WHERE user_id = $1";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected)
    }

    /// The user's group names, sorted.
    pub async fn user_groups(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT g.group_name FROM user_groups ug JOIN groups g ON g.id = ug.group_id \
                   WHERE ug.user_id = $1 ORDER BY g.group_name";
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(sql)
                .bind(user_id)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Deletes the user, with their sessions, tokens, memberships and grants; moves
    /// the policy epoch.
    pub async fn delete_user(&self, user_id: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted > 0 {
                sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    // ---- access tokens ----------------------------------------------------

    /// Drops the user's expired tokens; then the number of live ones.
    pub async fn purge_and_count_tokens(&self, user_id: i64, now: i64) -> Result<i64, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND expires_at <= $2")
                .bind(user_id)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(pool)
                    .await?,
            )
        })
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
        let sql = "INSERT INTO access_tokens \
                     (user_id, name, prefix, token_hash, created_at, created_by, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
        let id: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(user_id)
                .bind(name)
                .bind(prefix)
                .bind(token_hash)
                .bind(now)
                .bind(created_by)
                .bind(expires_at)
                .fetch_one(pool)
                .await?
        });
        Ok(AccessTokenRecord {
            id,
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
        let sql = "SELECT id, name, prefix AS token_prefix, created_at, created_by, expires_at, \
                          last_used_at \
                   FROM access_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql).bind(user_id).fetch_all(pool).await?)
        })
    }

    /// Revokes one of the user's tokens; false when it is not theirs or unknown.
    pub async fn delete_token(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        let sql = "DELETE FROM access_tokens WHERE user_id = $1 AND id = $2";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(user_id)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected > 0)
    }

    pub async fn token_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<AccessTokenCheck>, StoreError> {
        let sql = "SELECT t.id, t.token_hash, t.expires_at, t.last_used_at, \
                          u.id AS user_id, u.username, u.display_name, u.is_admin \
                   FROM access_tokens t JOIN users u ON u.id = t.user_id AND u.active \
                   WHERE t.prefix = $1";
        let row: Option<TokenCheckRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(prefix)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(AccessTokenCheck::from))
    }

    /// Records a use, at most one write per token per `every` seconds.
    pub async fn touch_token(&self, id: i64, now: i64, every: i64) -> Result<(), StoreError> {
        let sql = "UPDATE access_tokens SET last_used_at = $1 \
                   WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)";
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(now)
                .bind(id)
                .bind(now - every)
                .execute(pool)
                .await?;
        });
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
        let sql = "INSERT INTO sessions (id, user_id, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4)";
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(id)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at, \
                          s.idp_subject, s.idp_refresh_token, \
                          u.id AS uid, u.username, u.display_name, u.is_admin \
                   FROM sessions s LEFT JOIN users u ON u.id = s.user_id AND u.active \
                   WHERE s.id = $1";
        let row: Option<SessionRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(SessionRecord::from))
    }

    /// Records (or, when the IdP rotated it, replaces) the session's IdP grant.
    pub async fn set_session_grant(&self, id: &str, grant: &IdpGrant) -> Result<(), StoreError> {
        let sql = "UPDATE sessions SET idp_subject = $1, idp_refresh_token = $2 WHERE id = $3";
        on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(&grant.subject)
                .bind(&grant.sealed_refresh_token)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Revokes a session; false when it was unknown or already revoked.
    pub async fn revoke_session(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let sql = "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected > 0)
    }

    /// Revokes every live session of the user (`SessionStore::revoke_all_of_user`
    /// for `SESSION_TYPE=sql`); how many were revoked.
    pub async fn revoke_user_sessions(&self, user_id: i64, now: i64) -> Result<u64, StoreError> {
        let sql = "UPDATE sessions SET revoked_at = $1 \
                   WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1";
        let affected = on_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(now)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected)
    }

    // ---- session signing keys ---------------------------------------------

    /// The key new session cookies are signed with: the newest one.
    pub async fn newest_signing_key(&self) -> Result<Option<SigningKeyRow>, StoreError> {
        let sql = "SELECT kid, private_key, created_at FROM signing_keys \
                   ORDER BY created_at DESC, kid DESC LIMIT 1";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql).fetch_optional(pool).await?)
        })
    }

    pub async fn signing_key(&self, kid: &str) -> Result<Option<SigningKeyRow>, StoreError> {
        let sql = "SELECT kid, private_key, created_at FROM signing_keys WHERE kid = $1";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql).bind(kid).fetch_optional(pool).await?)
        })
    }

    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        let sql = "SELECT kid, private_key, created_at FROM signing_keys \
                   ORDER BY created_at DESC, kid DESC";
        on_pool!(self, |pool| Ok(sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// Inserts the first signing key, unless another replica got there first,
    /// so replicas starting together end up with one key. In SQLite the single
    /// statement is enough (one writer at a time). In PostgreSQL two concurrent
    /// `NOT EXISTS` checks could both pass, so the insert runs under a
    /// transaction-scoped advisory lock: the second replica waits for the first
    /// one's commit, then its statement sees the row and inserts nothing.
    pub async fn insert_first_signing_key(
        &self,
        kid: &str,
        private_key: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO signing_keys (kid, private_key, created_at) \
                   SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)";
        match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query(sql)
                    .bind(kid)
                    .bind(private_key)
                    .bind(now)
                    .execute(pool)
                    .await?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(FIRST_SIGNING_KEY_LOCK)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(sql)
                    .bind(kid)
                    .bind(private_key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// Databases for tests. `POLICY_SERVICE_TEST_DATABASE_URL` (a PostgreSQL URL,
/// as `make test` exports it) runs the tests on that server: every fresh
/// database is then a newly created PostgreSQL database, named
/// `policy_service_test_<random>`, on it (left there; `make test`'s server is
/// thrown away afterwards). Unset, they run on SQLite.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use sqlx::Connection;

    use crate::settings::DatabaseUrl;

    pub const TEST_DATABASE_VAR: &str = "POLICY_SERVICE_TEST_DATABASE_URL";

    fn server() -> Option<String> {
        let value = std::env::var(TEST_DATABASE_VAR).ok()?;
        if value.trim().is_empty() {
            return None;
        }
        match DatabaseUrl::parse(&value) {
            Ok(DatabaseUrl::Postgres(url)) => Some(url),
            _ => panic!("{TEST_DATABASE_VAR} must be a postgresql:// URL"),
        }
    }

    /// Creates an empty PostgreSQL database on the test server; its URL.
    fn create_postgres_database(server: &str) -> String {
        let name = format!("policy_service_test_{:016x}", rand::random::<u64>());
        let create = format!("CREATE DATABASE {name}");
        // On a thread of its own: the callers may already be inside a runtime.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
                        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        conn.close().await.unwrap();
                    });
                })
                .join()
                .unwrap();
        });
        let mut url = url::Url::parse(server).unwrap();
        url.set_path(&name);
        url.to_string()
    }

    /// `OIDC_USERS_DB_URI` of a fresh, empty database of its own: in-memory
    /// SQLite, or a new PostgreSQL database.
    pub fn fresh_database_uri() -> String {
        match server() {
            Some(server) => create_postgres_database(&server),
            None => "sqlite::memory:".into(),
        }
    }

    pub fn fresh_database() -> DatabaseUrl {
        DatabaseUrl::parse(&fresh_database_uri()).unwrap()
    }

    /// A fresh database that several stores (restarts, replicas) can open: a
    /// SQLite file in the temporary directory (removed on drop), or a new
    /// PostgreSQL database.
    pub struct SharedDatabase {
        pub uri: String,
        file: Option<PathBuf>,
    }

    impl SharedDatabase {
        pub fn new() -> Self {
            if let Some(server) = server() {
                return SharedDatabase {
                    uri: create_postgres_database(&server),
                    file: None,
                };
            }
            let name = format!("policy-service-test-{:016x}.db", rand::random::<u64>());
            let file = std::env::temp_dir().join(name);
            SharedDatabase {
                uri: format!("sqlite:///{}", file.display()),
                file: Some(file),
            }
        }

        pub fn url(&self) -> DatabaseUrl {
            DatabaseUrl::parse(&self.uri).unwrap()
        }

        /// The SQLite file, when on SQLite.
        pub fn file(&self) -> Option<&Path> {
            self.file.as_deref()
        }
    }

    impl Drop for SharedDatabase {
        fn drop(&mut self) {
            let Some(file) = &self.file else { return };
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{fresh_database, SharedDatabase};
    use super::*;

    async fn fresh() -> Store {
        Store::connect(&fresh_database()).await.unwrap()
    }

    #[tokio::test]
    async fn auth_states_are_single_use_and_expire() {
        let store = fresh().await;
        let t = 1_000_000;
        store
            .insert_auth_state("s1", "n1", "v1", "/next", t)
            .await
            .unwrap();
        let got = store.take_auth_state("s1", t + 10).await.unwrap().unwrap();
        assert_eq!(got.nonce, "n1");
        assert_eq!(got.pkce_verifier, "v1");
        assert_eq!(got.next, "/next");
        assert_eq!(got.created_at, t);
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
        let store = fresh().await;
        let groups = vec!["mlflow".to_string(), "mlflow-admin".to_string()];
        let id = store
            .record_login("alice@example.com", "Alice", true, &groups, 10)
            .await
            .unwrap();
        assert_eq!(store.user_groups(id).await.unwrap(), groups);
        let user = store
            .user_by_name("alice@example.com")
            .await
            .unwrap()
            .unwrap();
        assert!(user.is_admin);
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
        assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sessions_follow_their_user() {
        let store = fresh().await;
        let uid = store
            .record_login("bob", "Bob", true, &[], 10)
            .await
            .unwrap();
        store.create_session("sid", uid, 10, 100).await.unwrap();
        let session = store.session("sid").await.unwrap().unwrap();
        assert_eq!(
            (session.user_id, session.created_at, session.expires_at),
            (uid, 10, 100)
        );
        assert_eq!(session.revoked_at, None);
        assert!(session.user.unwrap().is_admin);
        assert!(store.revoke_session("sid", 20).await.unwrap());
        assert!(!store.revoke_session("sid", 30).await.unwrap());
        assert_eq!(
            store.session("sid").await.unwrap().unwrap().revoked_at,
            Some(20)
        );
        assert_eq!(store.session("other").await.unwrap(), None);
        store.delete_user(uid).await.unwrap();
        assert_eq!(store.session("sid").await.unwrap(), None, "cascaded");
    }

    #[tokio::test]
    async fn access_tokens_round_trip() {
        let store = fresh().await;
        let uid = store
            .record_login("carol", "Carol", false, &[], 10)
            .await
            .unwrap();
        let old = store
            .insert_token(uid, "old", "p1", "h1", "carol", 10, 50)
            .await
            .unwrap();
        let new = store
            .insert_token(uid, "new", "p2", "h2", "admin", 20, 500)
            .await
            .unwrap();
        assert_ne!(old.id, new.id);
        assert_eq!(store.tokens(uid).await.unwrap(), vec![new.clone(), old]);
        let check = store.token_by_prefix("p2").await.unwrap().unwrap();
        assert_eq!(
            (check.id, check.token_hash.as_str(), check.expires_at),
            (new.id, "h2", 500)
        );
        assert_eq!(check.user.username, "carol");
        assert!(!check.user.is_admin);
        store.touch_token(new.id, 100, 60).await.unwrap();
        store.touch_token(new.id, 130, 60).await.unwrap();
        let check = store.token_by_prefix("p2").await.unwrap().unwrap();
        assert_eq!(check.last_used_at, Some(100), "at most one write a minute");
        assert_eq!(store.purge_and_count_tokens(uid, 60).await.unwrap(), 1);
        assert!(store.token_by_prefix("p1").await.unwrap().is_none());
        assert!(!store.delete_token(uid + 1, new.id).await.unwrap());
        assert!(store.delete_token(uid, new.id).await.unwrap());
        assert_eq!(store.purge_and_count_tokens(uid, 60).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn first_signing_key_is_inserted_once() {
        let store = fresh().await;
        store.insert_first_signing_key("a", b"k1", 5).await.unwrap();
        store.insert_first_signing_key("b", b"k2", 6).await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        let newest = store.newest_signing_key().await.unwrap().unwrap();
        assert_eq!(
            (newest.kid.as_str(), &newest.private_key[..]),
            ("a", &b"k1"[..])
        );
        assert_eq!(store.signing_key("a").await.unwrap(), Some(newest));
        assert_eq!(store.signing_key("b").await.unwrap(), None);
    }

    /// Replicas starting together, each with its own pool, race for the first
    /// key: exactly one wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_replicas_insert_one_first_signing_key() {
        let db = SharedDatabase::new();
        let url = db.url();
        // Migrated once, so the replicas race for the key only.
        Store::connect(&url).await.unwrap().close().await;
        let mut replicas = Vec::new();
        for _ in 0..8 {
            replicas.push(Store::connect(&url).await.unwrap());
        }
        let mut inserts = tokio::task::JoinSet::new();
        for (i, store) in replicas.iter().enumerate() {
            let store = store.clone();
            inserts.spawn(async move {
                let kid = format!("kid-{i}");
                store.insert_first_signing_key(&kid, b"key", 7).await
            });
        }
        while let Some(done) = inserts.join_next().await {
            done.unwrap().unwrap();
        }
        for store in &replicas {
            assert_eq!(store.signing_keys().await.unwrap().len(), 1);
            store.close().await;
        }
    }
}
