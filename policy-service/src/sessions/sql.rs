//! `SESSION_TYPE=sql`: the `sessions` table of the permission database, through
//! the `Store`. Every replica sharing the database (`OIDC_USERS_DB_URI`) sees the
//! same sessions.

use super::{NewSession, SessionStore, StoreFuture};
use crate::store::{IdpGrant, SessionRecord, Store};

pub struct SqlSessions {
    store: Store,
}

impl SqlSessions {
    pub fn new(store: Store) -> Self {
        SqlSessions { store }
    }
}

impl SessionStore for SqlSessions {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn create<'a>(&'a self, session: &'a NewSession) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.store
                .create_session(
                    &session.id,
                    session.user_id,
                    session.created_at,
                    session.expires_at,
                )
                .await?;
            if let Some(grant) = &session.grant {
                self.store.set_session_grant(&session.id, grant).await?;
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move { Ok(self.store.session(id).await?) })
    }

    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.store.revoke_session(id, now).await?) })
    }

    fn revoke_all_of_user(&self, user_id: i64, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move { Ok(self.store.revoke_user_sessions(user_id, now).await?) })
    }

    fn set_grant<'a>(&'a self, id: &'a str, grant: &'a IdpGrant, _now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move { Ok(self.store.set_session_grant(id, grant).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::contract;

    #[tokio::test]
    async fn contract() {
        let store = contract::store().await;
        let sessions = SqlSessions::new(store.clone());
        contract::check(&sessions, &store).await;
    }
}
