//! Where server-side sessions live (`SESSION_TYPE`).
//!
//! The browser holds a short-lived signed cookie (see `crate::session`); the
//! session store holds the revocable session it names (`sid`), which renewal,
//! logout and `/oidc/auth/status` look up. One store per file:
//!
//! - `sql` (the default): the `sessions` table of the permission database, through
//!   the `Store`; shared by every replica that shares the database.
//! - `filesystem`: one JSON file per session under `SESSION_FILE_DIR`, named by a
//!   hash of `SESSION_KEY_PREFIX` + the session id, written atomically.
//! - `redis`: one key `SESSION_KEY_PREFIX` + id per session, with a Redis TTL of
//!   the session's remaining life.
//!
//! Whatever the store, the user (and their admin flag) is read from the
//! permission database at every lookup, so a demotion or a deleted user takes
//! effect at the next renewal.

pub mod filesystem;
pub mod redis;
pub mod sql;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::settings::Settings;
use crate::store::{IdpGrant, SessionRecord, Store, StoreError};

/// Why the session store could not answer.
#[derive(Debug, Error)]
pub enum SessionStoreError {
    /// The store cannot be reached or used (Redis down, a disk error): the
    /// caller answers 503, never a pass.
    #[error("the session store (SESSION_TYPE={backend}) cannot be used: {detail}")]
    Unavailable {
        backend: &'static str,
        detail: String,
    },
    /// The permission database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionStoreError {
    pub(crate) fn unavailable(backend: &'static str, detail: impl fmt::Display) -> Self {
        SessionStoreError::Unavailable {
            backend,
            detail: detail.to_string(),
        }
    }
}

/// A session to record at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub user_id: i64,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The IdP grant renewal refreshes (`OIDC_USE_REFRESH_TOKEN`).
    pub grant: Option<IdpGrant>,
}

pub type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SessionStoreError>> + Send + 'a>>;

/// A place for server-side sessions.
pub trait SessionStore: Send + Sync {
    /// `sql`, `filesystem` or `redis`: the `SESSION_TYPE` value.
    fn name(&self) -> &'static str;

    /// Records a new session, live until its `expires_at`.
    fn create<'a>(&'a self, session: &'a NewSession) -> StoreFuture<'a, ()>;

    /// The session `id` with its user (`None` when the user no longer exists), or
    /// `None` when the session is unknown. Revoked and expired sessions may still
    /// be returned: `routes::session::session_problem` judges them.
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>>;

    /// Ends the session `id`; false when it was unknown or already ended.
    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool>;

    /// Ends every live session of the user; how many were ended.
    fn revoke_all_of_user(&self, user_id: i64, now: i64) -> StoreFuture<'_, u64>;

    /// Replaces the session's IdP grant (the IdP rotated the refresh token).
    fn set_grant<'a>(&'a self, id: &'a str, grant: &'a IdpGrant, now: i64) -> StoreFuture<'a, ()>;
}

/// The values of `SESSION_TYPE`, for messages.
pub const SESSION_TYPES: &str = "sql, filesystem, redis";

/// `SESSION_TYPE` with the settings of the chosen store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionType {
    /// The permission database (`OIDC_USERS_DB_URI`).
    Sql,
    /// Files under `SESSION_FILE_DIR`.
    Filesystem { dir: PathBuf },
    /// A Redis server (`REDIS_*`).
    Redis(RedisSettings),
}

impl SessionType {
    pub fn name(&self) -> &'static str {
        match self {
            SessionType::Sql => "sql",
            SessionType::Filesystem { .. } => "filesystem",
            SessionType::Redis(_) => "redis",
        }
    }
}

/// `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_SSL`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssl: bool,
}

impl RedisSettings {
    /// `redis[s]://host:port/db`, for logs and messages (no credentials).
    pub fn target(&self) -> String {
        let scheme = if self.ssl { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/{}", self.port, self.db)
    }
}

// The password stays out of logs.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl", &self.ssl)
            .finish()
    }
}

/// The store the settings select. Creates `SESSION_FILE_DIR` when missing; does
/// not contact Redis (an unreachable Redis makes sign-in and renewal answer 503,
/// it does not stop start-up).
pub fn open(
    settings: &Settings,
    store: &Store,
) -> Result<Arc<dyn SessionStore>, SessionStoreError> {
    let prefix = settings.session_key_prefix.clone();
    Ok(match &settings.session_type {
        SessionType::Sql => Arc::new(sql::SqlSessions::new(store.clone())),
        SessionType::Filesystem { dir } => Arc::new(filesystem::FilesystemSessions::open(
            dir.clone(),
            prefix,
            store.clone(),
        )?),
        SessionType::Redis(redis) => {
            Arc::new(redis::RedisSessions::new(redis, prefix, store.clone())?)
        }
    })
}

/// What the filesystem and Redis stores keep per session (JSON). Never the
/// session id itself: it is in the key (Redis) or hashed into the file name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub key_prefix: String,
    pub user_id: i64,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    #[serde(default)]
    pub grant: Option<IdpGrant>,
}

impl Stored {
    pub fn new(session: &NewSession, key_prefix: &str) -> Self {
        Stored {
            key_prefix: key_prefix.to_string(),
            user_id: session.user_id,
            username: session.username.clone(),
            created_at: session.created_at,
            expires_at: session.expires_at,
            revoked_at: None,
            grant: session.grant.clone(),
        }
    }

    /// The session with its user as the permission database has it now: the
    /// same name *and* id (a user deleted and created again is another user).
    pub async fn into_record(self, id: &str, store: &Store) -> Result<SessionRecord, StoreError> {
        let user = store
            .user_by_name(&self.username)
            .await?
            .filter(|user| user.id == self.user_id);
        Ok(SessionRecord {
            id: id.to_string(),
            user_id: self.user_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            user,
            grant: self.grant,
        })
    }
}

#[cfg(test)]
pub(crate) mod contract;
