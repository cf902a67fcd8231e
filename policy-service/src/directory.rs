//! The SQL of the management API's users, groups and audit log: what admins list,
//! create and delete. Part of the store layer (rules in `store.rs`). Every write is
//! audited in its own transaction and moves the policy epoch when it can change a
//! decision.

use serde::Serialize;

use crate::grants::audit;
use crate::store::{on_pool, Store, StoreError, BUMP_EPOCH};

/// A user as admins see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserDetail {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub is_admin: bool,
    pub active: bool,
    #[sqlx(skip)]
    pub groups: Vec<String>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Member {
    pub username: String,
    pub is_admin: bool,
}

/// One change in the audit log; `before` and `after` are JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What a user creation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existed,
}

impl Store {
    /// Every username, sorted (deactivated users included: grants can name them).
    pub async fn usernames(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT username FROM users ORDER BY username";
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(sql).fetch_all(pool).await?)
        })
    }

    /// A user with their groups, active or not.
    pub async fn user_detail(&self, username: &str) -> Result<Option<UserDetail>, StoreError> {
        let sql = "SELECT id, username, display_name, is_admin, active FROM users \
                   WHERE username = $1";
        let found: Option<UserDetail> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        let Some(mut user) = found else {
            return Ok(None);
        };
        user.groups = self.user_groups(user.id).await?;
        Ok(Some(user))
    }

    /// Creates a user ahead of their first sign-in (grants can then name them). At
    /// sign-in the IdP's groups decide admin status again.
    pub async fn create_user(
        &self,
        username: &str,
        display_name: &str,
        is_admin: bool,
        now: i64,
        actor: &str,
    ) -> Result<Created, StoreError> {
        let after = serde_json::json!({"display_name": display_name, "is_admin": is_admin});
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO users (username, display_name, is_admin, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING RETURNING id",
            )
            .bind(username)
            .bind(display_name)
            .bind(is_admin)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if id.is_none() {
                return Ok(Created::Existed);
            }
            audit!(
                tx,
                actor,
                "user.create",
                format!("user {username}"),
                None::<String>,
                Some(after.to_string())
            );
            sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Created::New)
        })
    }

    /// Deletes a user by name with their sessions, tokens, memberships and grants;
    /// `false` when there is no such user.
    pub async fn delete_user_named(&self, username: &str, actor: &str) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let gone: Option<(String, bool)> = sqlx::query_as(
                "DELETE FROM users WHERE username = $1 RETURNING display_name, is_admin",
            )
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((display_name, is_admin)) = gone else {
                return Ok(false);
            };
            let before = serde_json::json!({"display_name": display_name, "is_admin": is_admin});
            audit!(
                tx,
                actor,
                "user.delete",
                format!("user {username}"),
                Some(before.to_string()),
                None::<String>
            );
            sqlx::query(BUMP_EPOCH).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Every group name, sorted.
    pub async fn group_names(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT group_name FROM groups ORDER BY group_name";
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(sql).fetch_all(pool).await?)
        })
    }

    /// Creates a group ahead of its members' sign-ins.
    pub async fn create_group(&self, name: &str, actor: &str) -> Result<Created, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO groups (group_name) VALUES ($1) \
                 ON CONFLICT (group_name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if id.is_none() {
                return Ok(Created::Existed);
            }
            audit!(
                tx,
                actor,
                "group.create",
                format!("group {name}"),
                None::<String>,
                Some("{}".to_string())
            );
            tx.commit().await?;
            Ok(Created::New)
        })
    }

    /// A group's members, sorted; `None` when there is no such group.
    pub async fn group_members(&self, name: &str) -> Result<Option<Vec<Member>>, StoreError> {
        let exists = "SELECT id FROM groups WHERE group_name = $1";
        let sql = "SELECT u.username, u.is_admin FROM users u \
                   JOIN user_groups ug ON ug.user_id = u.id \
                   JOIN groups g ON g.id = ug.group_id \
                   WHERE g.group_name = $1 ORDER BY u.username";
        on_pool!(self, |pool| {
            let id: Option<i64> = sqlx::query_scalar(exists)
                .bind(name)
                .fetch_optional(pool)
                .await?;
            if id.is_none() {
                return Ok(None);
            }
            Ok(Some(sqlx::query_as(sql).bind(name).fetch_all(pool).await?))
        })
    }

    /// Records a change made outside the grant tables' own writes (a user's
    /// activation), in its own statement.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        before: Option<String>,
        after: Option<String>,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            audit!(tx, actor, action, target, before, after);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The audit log, newest first: `limit` entries from `offset`, of those whose
    /// actor, action or target contains `search` (case-insensitive); and how many
    /// match in all.
    pub async fn audit_log(
        &self,
        search: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEntry>, i64), StoreError> {
        let pattern = format!("%{}%", search.to_lowercase());
        let count = "SELECT COUNT(*) FROM audit_log \
                     WHERE LOWER(actor || ' ' || action || ' ' || target) LIKE $1";
        let page = "SELECT id, at, actor, action, target, before, after FROM audit_log \
                    WHERE LOWER(actor || ' ' || action || ' ' || target) LIKE $1 \
                    ORDER BY id DESC LIMIT $2 OFFSET $3";
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar(count)
                .bind(&pattern)
                .fetch_one(pool)
                .await?;
            let rows: Vec<AuditEntry> = sqlx::query_as(page)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            Ok((rows, total))
        })
    }
}

#[cfg(test)]
mod tests {
    use mlflow_edge_authz::permission::Permission;

    use crate::grants::{GrantKind, Principal};
    use crate::store::{now, testing, Store};

    #[tokio::test]
    async fn grant_changes_users_and_groups_are_listed_and_audited() {
        let store = Store::connect(&testing::fresh_database()).await.unwrap();
        let (exp, alice, ml) = (
            GrantKind::Experiment,
            Principal::User("alice"),
            Principal::Group("ml"),
        );
        store
            .create_grant(exp, "7", alice, Permission::Read, now(), "root")
            .await
            .unwrap();
        store
            .create_grant(exp, "7", ml, Permission::Edit, now(), "root")
            .await
            .unwrap();
        store
            .update_grant(exp, "7", alice, Permission::Manage, "root")
            .await
            .unwrap();
        let on = store.grants_on(exp, "7").await.unwrap();
        let seen: Vec<_> = on
            .iter()
            .map(|h| (h.holder.as_str(), h.name.as_str(), h.permission))
            .collect();
        assert_eq!(
            seen,
            [
                ("user", "alice", Permission::Manage),
                ("group", "ml", Permission::Edit)
            ]
        );
        assert_eq!(
            store.grants_of_group(exp, "ml").await.unwrap(),
            [("7".to_string(), Permission::Edit)]
        );
        assert_eq!(
            store
                .create_user("bob", "Bob", false, now(), "root")
                .await
                .unwrap(),
            super::Created::New
        );
        assert_eq!(
            store
                .create_user("bob", "Bob", false, now(), "root")
                .await
                .unwrap(),
            super::Created::Existed
        );
        assert!(store.delete_user_named("bob", "root").await.unwrap());
        assert!(!store.delete_user_named("bob", "root").await.unwrap());
        let (log, total) = store.audit_log("", 10, 0).await.unwrap();
        assert_eq!(total, 5);
        let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "user.delete",
                "user.create",
                "grant.update",
                "grant.create",
                "grant.create"
            ]
        );
        assert!(
            log[2].before.as_deref().unwrap().contains("READ"),
            "{log:?}"
        );
        assert!(
            log[2].after.as_deref().unwrap().contains("MANAGE"),
            "{log:?}"
        );
        let (alice_only, total) = store.audit_log("ALICE", 10, 0).await.unwrap();
        assert_eq!((alice_only.len(), total), (2, 2));
    }
}
