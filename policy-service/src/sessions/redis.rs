//! `SESSION_TYPE=redis`: one key per session, `SESSION_KEY_PREFIX` + id, holding
//! JSON, with a Redis TTL of the session's remaining life (Redis drops it when
//! the session ends). A set `SESSION_KEY_PREFIX` + `user:` + user id lists the
//! user's session ids, for "sign out everywhere".
//!
//! The connection is opened at the first use, not at start-up, and opened again
//! after an error; a command that fails because the connection dropped is tried
//! once more on a new one. While Redis cannot be reached every call fails fast
//! (`CONNECT_TIMEOUT`, `RESPONSE_TIMEOUT`) with `SessionStoreError::Unavailable`.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError,
};
use tokio::sync::Mutex;

use super::{NewSession, RedisSettings, SessionStore, SessionStoreError, StoreFuture, Stored};
use crate::store::{IdpGrant, SessionRecord, Store};

const BACKEND: &str = "redis";
/// Kept below the filter's default callout timeout (2 s), so the filter gets the
/// service's 503 rather than a timeout of its own.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct RedisSessions {
    client: Client,
    config: AsyncConnectionConfig,
    connection: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    target: String,
    store: Store,
}

#[derive(Clone, Copy)]
enum Query<'a> {
    Cmd(&'a ::redis::Cmd),
    Pipe(&'a ::redis::Pipeline),
}

impl RedisSessions {
    /// Builds the client; does not connect.
    pub fn new(
        settings: &RedisSettings,
        prefix: String,
        store: Store,
    ) -> Result<Self, SessionStoreError> {
        let addr = if settings.ssl {
            ConnectionAddr::TcpTls {
                host: settings.host.clone(),
                port: settings.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(settings.host.clone(), settings.port)
        };
        let mut redis = RedisConnectionInfo::default().set_db(settings.db);
        if let Some(username) = &settings.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis = redis.set_password(password);
        }
        let target = settings.target();
        let info = addr
            .into_connection_info()
            .map(|info| info.set_redis_settings(redis))
            .map_err(|e| SessionStoreError::unavailable(BACKEND, format!("{target}: {e}")))?;
        let client = Client::open(info)
            .map_err(|e| SessionStoreError::unavailable(BACKEND, format!("{target}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        Ok(RedisSessions {
            client,
            config,
            connection: Mutex::new(None),
            prefix,
            target,
            store,
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    fn unavailable(&self, err: &RedisError) -> SessionStoreError {
        SessionStoreError::unavailable(BACKEND, format!("{}: {err}", self.target))
    }

    /// The open connection, or a new one; true when it is new.
    async fn connection(&self) -> Result<(MultiplexedConnection, bool), SessionStoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok((connection.clone(), false));
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        *slot = Some(connection.clone());
        Ok((connection, true))
    }

    async fn run<T: FromRedisValue>(&self, query: Query<'_>) -> Result<T, SessionStoreError> {
        let mut retried = false;
        loop {
            let (mut connection, fresh) = self.connection().await?;
            let result = match query {
                Query::Cmd(cmd) => cmd.query_async(&mut connection).await,
                Query::Pipe(pipe) => pipe.query_async(&mut connection).await,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(err) => {
                    // Whatever went wrong, the next call starts on a new connection.
                    *self.connection.lock().await = None;
                    let dropped = err.is_connection_dropped() || err.is_io_error();
                    if fresh || retried || !dropped {
                        return Err(self.unavailable(&err));
                    }
                    retried = true;
                }
            }
        }
    }

    async fn load(&self, id: &str) -> Result<Option<Stored>, SessionStoreError> {
        let value: Option<String> = self
            .run(Query::Cmd(::redis::cmd("GET").arg(self.key(id))))
            .await?;
        let Some(value) = value else { return Ok(None) };
        match serde_json::from_str::<Stored>(&value) {
            Ok(stored) => Ok(Some(stored)),
            Err(e) => {
                tracing::warn!("ignoring an unreadable session in Redis: {e}");
                Ok(None)
            }
        }
    }

    /// Stores `stored` under `id` for the rest of its life; drops it when over.
    fn put(
        &self,
        pipe: &mut ::redis::Pipeline,
        id: &str,
        stored: &Stored,
        now: i64,
    ) -> Result<(), SessionStoreError> {
        let ttl = stored.expires_at - now;
        if ttl <= 0 {
            pipe.cmd("DEL").arg(self.key(id)).ignore();
            return Ok(());
        }
        let json = serde_json::to_string(stored)
            .map_err(|e| SessionStoreError::unavailable(BACKEND, e))?;
        pipe.cmd("SET")
            .arg(self.key(id))
            .arg(json)
            .arg("EX")
            .arg(ttl)
            .ignore();
        Ok(())
    }

    async fn revoke_one(&self, id: &str, now: i64) -> Result<bool, SessionStoreError> {
        match self.load(id).await? {
            Some(mut stored) if stored.revoked_at.is_none() => {
                stored.revoked_at = Some(now);
                let mut pipe = ::redis::pipe();
                self.put(&mut pipe, id, &stored, now)?;
                self.run::<()>(Query::Pipe(&pipe)).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Answers PING: for start-up logs.
    pub async fn ping(&self) -> Result<(), SessionStoreError> {
        let _: String = self.run(Query::Cmd(&::redis::cmd("PING"))).await?;
        Ok(())
    }
}

impl SessionStore for RedisSessions {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn create<'a>(&'a self, session: &'a NewSession) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ttl = session.expires_at - session.created_at;
            if ttl <= 0 {
                return Ok(());
            }
            let stored = Stored::new(session, &self.prefix);
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            self.put(&mut pipe, &session.id, &stored, session.created_at)?;
            // Every session lives PERMANENT_SESSION_LIFETIME: the newest ends last.
            let user_key = self.user_key(session.user_id);
            pipe.cmd("SADD").arg(&user_key).arg(&session.id).ignore();
            pipe.cmd("EXPIRE").arg(&user_key).arg(ttl).ignore();
            self.run::<()>(Query::Pipe(&pipe)).await
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let Some(stored) = self.load(id).await? else {
                return Ok(None);
            };
            if stored.key_prefix != self.prefix {
                return Ok(None);
            }
            Ok(Some(stored.into_record(id, &self.store).await?))
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(self.revoke_one(id, now))
    }

    fn set_grant<'a>(&'a self, id: &'a str, grant: &'a IdpGrant, now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Some(mut stored) = self.load(id).await? {
                stored.grant = Some(grant.clone());
                let mut pipe = ::redis::pipe();
                self.put(&mut pipe, id, &stored, now)?;
                self.run::<()>(Query::Pipe(&pipe)).await?;
            }
            Ok(())
        })
    }

    fn revoke_all_of_user(&self, user_id: i64, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let user_key = self.user_key(user_id);
            let ids: Vec<String> = self
                .run(Query::Cmd(::redis::cmd("SMEMBERS").arg(&user_key)))
                .await?;
            let mut ended = 0;
            for id in ids {
                match self.load(&id).await? {
                    None => {
                        // Expired: forget it.
                        self.run::<()>(Query::Cmd(::redis::cmd("SREM").arg(&user_key).arg(&id)))
                            .await?;
                    }
                    Some(stored) if stored.user_id == user_id && stored.expires_at > now => {
                        if self.revoke_one(&id, now).await? {
                            ended += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
            Ok(ended)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sessions::contract;
    use crate::store::now;

    /// `host:port` of the Redis server the tests use: `make test-native` starts
    /// one and exports it. Unset, the Redis tests say so and pass.
    pub const TEST_REDIS_VAR: &str = "POLICY_SERVICE_TEST_REDIS";

    pub fn test_redis() -> Option<(String, u16)> {
        let value = std::env::var(TEST_REDIS_VAR).ok()?;
        let (host, port) = value.trim().rsplit_once(':').unwrap_or_else(|| {
            panic!("{TEST_REDIS_VAR} must be host:port, not {value:?}");
        });
        Some((host.to_string(), port.parse().unwrap()))
    }

    fn settings(host: &str, port: u16, db: i64) -> RedisSettings {
        RedisSettings {
            host: host.into(),
            port,
            db,
            username: None,
            password: None,
            ssl: false,
        }
    }

    /// A key prefix of its own per test, so tests share the server safely.
    fn prefix() -> String {
        format!("test-{:016x}:", rand::random::<u64>())
    }

    macro_rules! redis_or_skip {
        () => {
            match test_redis() {
                Some(addr) => addr,
                None => {
                    eprintln!("{TEST_REDIS_VAR} is not set: Redis test not run (make test-native sets it)");
                    return;
                }
            }
        };
    }

    async fn raw(host: &str, port: u16, db: i64) -> MultiplexedConnection {
        let url = format!("redis://{host}:{port}/{db}");
        Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn contract() {
        let (host, port) = redis_or_skip!();
        let store = contract::store().await;
        let sessions =
            RedisSessions::new(&settings(&host, port, 0), prefix(), store.clone()).unwrap();
        sessions.ping().await.unwrap();
        contract::check(&sessions, &store).await;
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_and_the_remaining_life() {
        let (host, port) = redis_or_skip!();
        let store = contract::store().await;
        let prefix = prefix();
        let sessions =
            RedisSessions::new(&settings(&host, port, 2), prefix.clone(), store).unwrap();
        let t = now();
        let mut session = contract::new_session("sid-1", 7, "alice", t);
        session.expires_at = t + 120;
        sessions.create(&session).await.unwrap();

        let mut conn = raw(&host, port, 2).await;
        let key = format!("{prefix}sid-1");
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((115..=120).contains(&ttl), "ttl {ttl}");
        let json: String = ::redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let stored: Stored = serde_json::from_str(&json).unwrap();
        assert_eq!((stored.user_id, stored.username.as_str()), (7, "alice"));
        let members: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(format!("{prefix}user:7"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(members, vec!["sid-1"]);
        // Not in another database.
        let mut db0 = raw(&host, port, 0).await;
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut db0)
            .await
            .unwrap();
        assert!(!exists);

        // Revocation keeps the end of life.
        assert!(sessions.revoke("sid-1", t + 1).await.unwrap());
        let ttl: i64 = ::redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((110..=120).contains(&ttl), "ttl {ttl}");

        // A session already over is not stored.
        let mut over = contract::new_session("sid-2", 7, "alice", t);
        over.expires_at = t;
        sessions.create(&over).await.unwrap();
        assert!(sessions.get("sid-2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn username_and_password_are_used() {
        let (host, port) = redis_or_skip!();
        let user = format!("u{:012x}", rand::random::<u64>() >> 16);
        let mut admin = raw(&host, port, 0).await;
        let _: () = ::redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">pa ss:word")
            .arg("~*")
            .arg("+@all")
            .query_async(&mut admin)
            .await
            .unwrap();
        let store = contract::store().await;
        let mut with_user = settings(&host, port, 1);
        with_user.username = Some(user.clone());
        with_user.password = Some("pa ss:word".into());
        let sessions = RedisSessions::new(&with_user, prefix(), store.clone()).unwrap();
        sessions.ping().await.unwrap();

        with_user.password = Some("wrong".into());
        let wrong = RedisSessions::new(&with_user, prefix(), store).unwrap();
        let err = wrong.ping().await.unwrap_err().to_string();
        assert!(err.contains("SESSION_TYPE=redis"), "{err}");
        let _: () = ::redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .query_async(&mut admin)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable_fast() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = contract::store().await;
        let sessions =
            RedisSessions::new(&settings("127.0.0.1", port, 0), prefix(), store).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let err = sessions.get("x").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    SessionStoreError::Unavailable {
                        backend: "redis",
                        ..
                    }
                ),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("redis://127.0.0.1:{port}/0")),
                "{message}"
            );
        }
        let err = sessions
            .create(&contract::new_session("s", 1, "a", now()))
            .await
            .unwrap_err();
        assert!(matches!(err, SessionStoreError::Unavailable { .. }));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_restarted_connection_is_picked_up_again() {
        let (host, port) = redis_or_skip!();
        let store = contract::store().await;
        let sessions = RedisSessions::new(&settings(&host, port, 0), prefix(), store).unwrap();
        sessions.ping().await.unwrap();
        // Kill our own connection server-side: the next call reconnects and succeeds.
        let mut admin = raw(&host, port, 0).await;
        let name = format!("victim-{:016x}", rand::random::<u64>());
        {
            let (mut conn, _) = sessions.connection().await.unwrap();
            let _: () = ::redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let list: String = ::redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let id = list
            .lines()
            .find(|l| l.contains(&format!("name={name}")))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .unwrap()
            .to_string();
        let _: i64 = ::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query_async(&mut admin)
            .await
            .unwrap();
        sessions.ping().await.unwrap();
    }
}
