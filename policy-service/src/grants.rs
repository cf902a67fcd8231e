//! The SQL of permissions: direct grants, pattern grants, resource events and the
//! policy epoch. Part of the store layer (`store.rs` has the rules: each query written
//! once with `$1` placeholders, compiled for SQLite and PostgreSQL by `on_pool!`).
//!
//! Tables (`migrations/*/0005_permissions.sql`): `grants` (kind, resource, a user or a
//! group, permission), `grant_patterns` (kind, regex, priority, a user or a group,
//! permission) and `policy_epoch` (one row). Every write here moves the epoch in the
//! transaction that writes, so a reader that read the epoch first never caches a
//! newer state under an older epoch for long: the next poll sees the move.

use mlflow_edge_authz::permission::{Permission, ResourceKind};
use serde::Serialize;

use crate::store::{on_pool, Store, StoreError, BUMP_EPOCH};

/// What a direct grant is keyed by: an experiment id, or a registered model's name
/// (prompts are registered models and share these grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantKind {
    Experiment,
    RegisteredModel,
}

impl GrantKind {
    pub fn of(kind: ResourceKind) -> Self {
        match kind {
            ResourceKind::Experiment => GrantKind::Experiment,
            ResourceKind::RegisteredModel | ResourceKind::Prompt => GrantKind::RegisteredModel,
        }
    }

    fn as_sql(self) -> &'static str {
        match self {
            GrantKind::Experiment => "experiment",
            GrantKind::RegisteredModel => "registered_model",
        }
    }
}

/// `grant_patterns.kind`: prompts have pattern grants of their own.
fn pattern_kind(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Experiment => "experiment",
        ResourceKind::RegisteredModel => "registered_model",
        ResourceKind::Prompt => "prompt",
    }
}

/// Who holds a grant, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// A username (lower-case, as users are stored).
    User(&'a str),
    Group(&'a str),
}

impl<'a> Principal<'a> {
    fn name(self) -> &'a str {
        match self {
            Principal::User(name) | Principal::Group(name) => name,
        }
    }
}

/// A principal's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalId {
    User(i64),
    Group(i64),
}

impl PrincipalId {
    fn id(self) -> i64 {
        match self {
            PrincipalId::User(id) | PrincipalId::Group(id) => id,
        }
    }
}

/// The same statement for a user's or a group's rows: `by_principal!(p, "... ", " = $1")`
/// puts `user_id` or `group_id` between the two halves (both static strings).
macro_rules! by_principal {
    ($principal:expr, $head:literal, $tail:literal) => {
        match $principal {
            PrincipalId::User(_) => concat!($head, "user_id", $tail),
            PrincipalId::Group(_) => concat!($head, "group_id", $tail),
        }
    };
}

/// A statement on a principal's rows, the principal named by its username or group
/// name: `by_name!(p, "... AND ", "$3")` adds `user_id = (SELECT id FROM users WHERE
/// username = $3)` (or the group's), and an optional static tail. One statement, so a
/// transaction's first statement is its write (SQLite never upgrades a read).
macro_rules! by_name {
    ($principal:expr, $head:literal, $param:literal) => {
        by_name!($principal, $head, $param, "")
    };
    ($principal:expr, $head:literal, $param:literal, $tail:literal) => {
        match $principal {
            Principal::User(_) => concat!(
                $head,
                "user_id = (SELECT id FROM users WHERE username = ",
                $param,
                ")",
                $tail
            ),
            Principal::Group(_) => concat!(
                $head,
                "group_id = (SELECT id FROM groups WHERE group_name = ",
                $param,
                ")",
                $tail
            ),
        }
    };
}

/// The principal's row id, its row created first when missing: grants may name users
/// who have not signed in yet and groups no member has brought yet (a user row is
/// plain: not an admin, its display name the username).
macro_rules! ensure_principal {
    ($tx:ident, $principal:expr, $now:expr) => {{
        match $principal {
            Principal::User(name) => {
                sqlx::query(INSERT_USER)
                    .bind(name)
                    .bind(false)
                    .bind($now)
                    .execute(&mut *$tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(SELECT_USER_ID)
                    .bind(name)
                    .fetch_one(&mut *$tx)
                    .await?;
                PrincipalId::User(id)
            }
            Principal::Group(name) => {
                sqlx::query(INSERT_GROUP)
                    .bind(name)
                    .execute(&mut *$tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(SELECT_GROUP_ID)
                    .bind(name)
                    .fetch_one(&mut *$tx)
                    .await?;
                PrincipalId::Group(id)
            }
        }
    }};
}

/// The user a decision is about, as the database knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Subject {
    pub id: i64,
    pub is_admin: bool,
    pub active: bool,
}

/// A pattern grant: `regex` matched against resource names (`re.match`), the lowest
/// `priority` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternGrant {
    pub id: i64,
    pub regex: String,
    pub priority: i64,
    pub permission: Permission,
}

#[derive(sqlx::FromRow)]
struct PatternRow {
    id: i64,
    regex: String,
    priority: i64,
    permission: String,
}

impl TryFrom<PatternRow> for PatternGrant {
    type Error = StoreError;
    fn try_from(row: PatternRow) -> Result<Self, StoreError> {
        Ok(PatternGrant {
            id: row.id,
            regex: row.regex,
            priority: row.priority,
            permission: level(&row.permission)?,
        })
    }
}

fn level(text: &str) -> Result<Permission, StoreError> {
    Permission::parse(text).map_err(StoreError::Invalid)
}

fn levels(texts: Vec<String>) -> Result<Vec<Permission>, StoreError> {
    texts.iter().map(|t| level(t)).collect()
}

fn patterns_of(rows: Vec<PatternRow>) -> Result<Vec<PatternGrant>, StoreError> {
    rows.into_iter().map(PatternGrant::try_from).collect()
}

fn epoch_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A direct grant on a resource, as "who has access" lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `user` or `group`.
    pub holder: String,
    pub name: String,
    pub permission: Permission,
}

/// What a pattern update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternUpdate {
    /// Changed; the new epoch.
    Updated(u64),
    /// No such pattern for that principal and kind.
    Missing,
    /// The principal already has a pattern with that regex.
    Conflict,
}

const SELECT_USER_ID: &str = "SELECT id FROM users WHERE username = $1";
const SELECT_GROUP_ID: &str = "SELECT id FROM groups WHERE group_name = $1";
/// A user named in a grant or an event who has no row yet (see `ensure_principal!`).
const INSERT_USER: &str = "INSERT INTO users (username, display_name, is_admin, created_at) \
                           VALUES ($1, $1, $2, $3) ON CONFLICT (username) DO NOTHING";
const INSERT_GROUP: &str =
    "INSERT INTO groups (group_name) VALUES ($1) ON CONFLICT (group_name) DO NOTHING";

/// One row of the audit log, written in the transaction of the change it records.
pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (at, actor, action, target, before, after) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Records a change in the audit log inside transaction `tx`: who (`actor`), what
/// (`action`, e.g. `grant.update`), on what (`target`), the state before and after
/// (JSON text, `None` when there was or is none).
macro_rules! audit {
    ($tx:ident, $actor:expr, $action:expr, $target:expr, $before:expr, $after:expr) => {
        sqlx::query($crate::grants::INSERT_AUDIT)
            .bind($crate::store::now())
            .bind($actor)
            .bind($action)
            .bind($target)
            .bind($before)
            .bind($after)
            .execute(&mut *$tx)
            .await?
    };
}
pub(crate) use audit;

/// How the audit log names a principal: `user alice@example.com`, `group ml`.
pub fn principal_label(principal: Principal<'_>) -> String {
    match principal {
        Principal::User(name) => format!("user {name}"),
        Principal::Group(name) => format!("group {name}"),
    }
}

fn grant_target(kind: GrantKind, resource: &str, principal: Principal<'_>) -> String {
    format!(
        "{} {resource} for {}",
        kind.as_sql().replace('_', " "),
        principal_label(principal)
    )
}

fn pattern_target(kind: ResourceKind, principal: Principal<'_>, id: i64) -> String {
    format!(
        "{} pattern {id} of {}",
        pattern_kind(kind).replace('_', " "),
        principal_label(principal)
    )
}

fn permission_json(permission: Permission) -> String {
    serde_json::json!({ "permission": permission }).to_string()
}

fn pattern_json(regex: &str, priority: i64, permission: Permission) -> String {
    serde_json::json!({ "regex": regex, "priority": priority, "permission": permission })
        .to_string()
}

impl Store {
    // ---- the policy epoch ------------------------------------------------------

    pub async fn epoch(&self) -> Result<u64, StoreError> {
        let sql = "SELECT epoch FROM policy_epoch WHERE id = 1";
        let epoch: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar(sql).fetch_one(pool).await?
        });
        Ok(epoch_of(epoch))
    }

    /// Moves the epoch on with no grant change: at start-up, since settings that
    /// decide (`PERMISSION_SOURCE_ORDER`, `DEFAULT_MLFLOW_PERMISSION`) may have changed,
    /// and no filter may keep decisions made under the old ones.
    pub async fn bump_epoch(&self) -> Result<u64, StoreError> {
        let epoch: i64 = on_pool!(self, |pool| {
            sqlx::query_scalar(BUMP_EPOCH).fetch_one(pool).await?
        });
        Ok(epoch_of(epoch))
    }

    // ---- what resolution reads ---------------------------------------------------

    /// The user's row, deactivated or not; `None` for a user never seen.
    pub async fn subject(&self, username: &str) -> Result<Option<Subject>, StoreError> {
        let sql = "SELECT id, is_admin, active FROM users WHERE username = $1";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(username)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The user's own grant on a resource.
    pub async fn user_grant(
        &self,
        user_id: i64,
        kind: GrantKind,
        resource: &str,
    ) -> Result<Option<Permission>, StoreError> {
        let sql = "SELECT permission FROM grants \
                   WHERE kind = $1 AND resource = $2 AND user_id = $3";
        let row: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        row.as_deref().map(level).transpose()
    }

    /// The grants of the user's groups on a resource, one per group that has one.
    pub async fn group_grants_of_user(
        &self,
        user_id: i64,
        kind: GrantKind,
        resource: &str,
    ) -> Result<Vec<Permission>, StoreError> {
        let sql = "SELECT g.permission FROM grants g \
                   JOIN user_groups ug ON ug.group_id = g.group_id \
                   WHERE g.kind = $1 AND g.resource = $2 AND ug.user_id = $3";
        let rows: Vec<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        levels(rows)
    }

    /// The user's own pattern grants of a kind, by (priority, id).
    pub async fn user_patterns(
        &self,
        user_id: i64,
        kind: ResourceKind,
    ) -> Result<Vec<PatternGrant>, StoreError> {
        let sql = "SELECT id, regex, priority, permission FROM grant_patterns \
                   WHERE kind = $1 AND user_id = $2 ORDER BY priority, id";
        let rows: Vec<PatternRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(pattern_kind(kind))
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        patterns_of(rows)
    }

    /// The pattern grants of the user's groups, of a kind, by (priority, id).
    pub async fn group_patterns_of_user(
        &self,
        user_id: i64,
        kind: ResourceKind,
    ) -> Result<Vec<PatternGrant>, StoreError> {
        let sql = "SELECT p.id, p.regex, p.priority, p.permission FROM grant_patterns p \
                   JOIN user_groups ug ON ug.group_id = p.group_id \
                   WHERE p.kind = $1 AND ug.user_id = $2 ORDER BY p.priority, p.id";
        let rows: Vec<PatternRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(pattern_kind(kind))
                .bind(user_id)
                .fetch_all(pool)
                .await?
        });
        patterns_of(rows)
    }

    /// The resources of a kind the user holds a direct grant on, their own or one of
    /// their groups', sorted.
    pub async fn granted_resources_of_user(
        &self,
        user_id: i64,
        kind: GrantKind,
    ) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT g.resource FROM grants g \
                   WHERE g.kind = $1 AND (g.user_id = $2 OR g.group_id IN \
                     (SELECT group_id FROM user_groups WHERE user_id = $2)) \
                   ORDER BY g.resource";
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(sql)
                .bind(kind.as_sql())
                .bind(user_id)
                .fetch_all(pool)
                .await?)
        })
    }

    // ---- who holds what (the management API's listings) ------------------------

    /// Every direct grant on a resource: users' first, each sorted by name.
    pub async fn grants_on(
        &self,
        kind: GrantKind,
        resource: &str,
    ) -> Result<Vec<Holder>, StoreError> {
        let sql = "SELECT 'user' AS holder, u.username AS name, g.permission FROM grants g \
                   JOIN users u ON u.id = g.user_id WHERE g.kind = $1 AND g.resource = $2 \
                   UNION ALL \
                   SELECT 'group' AS holder, gr.group_name AS name, g.permission FROM grants g \
                   JOIN groups gr ON gr.id = g.group_id WHERE g.kind = $1 AND g.resource = $2 \
                   ORDER BY holder DESC, name";
        let rows: Vec<(String, String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(holder, name, permission)| {
                Ok(Holder {
                    holder,
                    name,
                    permission: level(&permission)?,
                })
            })
            .collect()
    }

    /// A group's direct grants of a kind: (resource, permission), by resource.
    pub async fn grants_of_group(
        &self,
        kind: GrantKind,
        group: &str,
    ) -> Result<Vec<(String, Permission)>, StoreError> {
        let sql = "SELECT g.resource, g.permission FROM grants g \
                   JOIN groups gr ON gr.id = g.group_id \
                   WHERE g.kind = $1 AND gr.group_name = $2 ORDER BY g.resource";
        let rows: Vec<(String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(kind.as_sql())
                .bind(group)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(resource, permission)| Ok((resource, level(&permission)?)))
            .collect()
    }

    // ---- direct grants ---------------------------------------------------------

    /// A principal's grant on a resource.
    pub async fn grant(
        &self,
        kind: GrantKind,
        resource: &str,
        principal: Principal<'_>,
    ) -> Result<Option<Permission>, StoreError> {
        let sql = by_name!(
            principal,
            "SELECT permission FROM grants WHERE kind = $1 AND resource = $2 AND ",
            "$3"
        );
        let row: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(principal.name())
                .fetch_optional(pool)
                .await?
        });
        row.as_deref().map(level).transpose()
    }

    /// Creates a grant; the principal's row is created when missing (a user who has
    /// not signed in yet, a group no member has brought yet). The new epoch, or `None`
    /// when the principal already has a grant on the resource.
    pub async fn create_grant(
        &self,
        kind: GrantKind,
        resource: &str,
        principal: Principal<'_>,
        permission: Permission,
        now: i64,
        actor: &str,
    ) -> Result<Option<u64>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let who = ensure_principal!(tx, principal, now);
            let sql = by_principal!(
                who,
                "INSERT INTO grants (kind, resource, permission, ",
                ") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            );
            let created = sqlx::query(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(permission.as_str())
                .bind(who.id())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if created == 0 {
                return Ok(None);
            }
            audit!(
                tx,
                actor,
                "grant.create",
                grant_target(kind, resource, principal),
                None::<String>,
                Some(permission_json(permission))
            );
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(epoch_of(epoch)))
        })
    }

    /// Changes a grant's level; the new epoch, or `None` when there is no such grant.
    pub async fn update_grant(
        &self,
        kind: GrantKind,
        resource: &str,
        principal: Principal<'_>,
        permission: Permission,
        actor: &str,
    ) -> Result<Option<u64>, StoreError> {
        let before_sql = by_name!(
            principal,
            "SELECT permission FROM grants WHERE kind = $1 AND resource = $2 AND ",
            "$3"
        );
        let sql = by_name!(
            principal,
            "UPDATE grants SET permission = $1 WHERE kind = $2 AND resource = $3 AND ",
            "$4"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The write first (SQLite never upgrades a read); nothing is committed
            // when there is no such grant.
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            let before: Option<String> = sqlx::query_scalar(before_sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(principal.name())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before else {
                return Ok(None);
            };
            sqlx::query(sql)
                .bind(permission.as_str())
                .bind(kind.as_sql())
                .bind(resource)
                .bind(principal.name())
                .execute(&mut *tx)
                .await?;
            audit!(
                tx,
                actor,
                "grant.update",
                grant_target(kind, resource, principal),
                Some(permission_json(level(&before)?)),
                Some(permission_json(permission))
            );
            tx.commit().await?;
            Ok(Some(epoch_of(epoch)))
        })
    }

    /// Removes a grant; the new epoch, or `None` when there was no such grant.
    pub async fn delete_grant(
        &self,
        kind: GrantKind,
        resource: &str,
        principal: Principal<'_>,
        actor: &str,
    ) -> Result<Option<u64>, StoreError> {
        let sql = by_name!(
            principal,
            "DELETE FROM grants WHERE kind = $1 AND resource = $2 AND ",
            "$3",
            " RETURNING permission"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before: Option<String> = sqlx::query_scalar(sql)
                .bind(kind.as_sql())
                .bind(resource)
                .bind(principal.name())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before else {
                return Ok(None);
            };
            audit!(
                tx,
                actor,
                "grant.delete",
                grant_target(kind, resource, principal),
                Some(permission_json(level(&before)?)),
                None::<String>
            );
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(epoch_of(epoch)))
        })
    }

    // ---- pattern grants ----------------------------------------------------------

    /// A principal's pattern grants of a kind, by (priority, id); none for an unknown
    /// principal.
    pub async fn patterns(
        &self,
        kind: ResourceKind,
        principal: Principal<'_>,
    ) -> Result<Vec<PatternGrant>, StoreError> {
        let sql = by_name!(
            principal,
            "SELECT id, regex, priority, permission FROM grant_patterns WHERE kind = $1 AND ",
            "$2",
            " ORDER BY priority, id"
        );
        let rows: Vec<PatternRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(pattern_kind(kind))
                .bind(principal.name())
                .fetch_all(pool)
                .await?
        });
        patterns_of(rows)
    }

    /// One of a principal's pattern grants of a kind.
    pub async fn pattern(
        &self,
        kind: ResourceKind,
        principal: Principal<'_>,
        id: i64,
    ) -> Result<Option<PatternGrant>, StoreError> {
        let sql = by_name!(
            principal,
            "SELECT id, regex, priority, permission FROM grant_patterns \
             WHERE kind = $1 AND id = $2 AND ",
            "$3"
        );
        let row: Option<PatternRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(pattern_kind(kind))
                .bind(id)
                .bind(principal.name())
                .fetch_optional(pool)
                .await?
        });
        row.map(PatternGrant::try_from).transpose()
    }

    /// Creates a pattern grant (and the principal's row when missing); the new grant
    /// and epoch, or `None` when the principal already has this regex for this kind.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pattern(
        &self,
        kind: ResourceKind,
        principal: Principal<'_>,
        regex: &str,
        priority: i64,
        permission: Permission,
        now: i64,
        actor: &str,
    ) -> Result<Option<(PatternGrant, u64)>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let who = ensure_principal!(tx, principal, now);
            let sql = by_principal!(
                who,
                "INSERT INTO grant_patterns (kind, regex, priority, permission, ",
                ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id"
            );
            let id: Option<i64> = sqlx::query_scalar(sql)
                .bind(pattern_kind(kind))
                .bind(regex)
                .bind(priority)
                .bind(permission.as_str())
                .bind(who.id())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(id) = id else {
                return Ok(None);
            };
            audit!(
                tx,
                actor,
                "pattern.create",
                pattern_target(kind, principal, id),
                None::<String>,
                Some(pattern_json(regex, priority, permission))
            );
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            let grant = PatternGrant {
                id,
                regex: regex.to_string(),
                priority,
                permission,
            };
            Ok(Some((grant, epoch_of(epoch))))
        })
    }

    /// Replaces a pattern grant's regex, priority and level.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_pattern(
        &self,
        kind: ResourceKind,
        principal: Principal<'_>,
        id: i64,
        regex: &str,
        priority: i64,
        permission: Permission,
        actor: &str,
    ) -> Result<PatternUpdate, StoreError> {
        let before_sql = by_name!(
            principal,
            "SELECT id, regex, priority, permission FROM grant_patterns \
             WHERE kind = $1 AND id = $2 AND ",
            "$3"
        );
        let sql = by_name!(
            principal,
            "UPDATE grant_patterns SET regex = $1, priority = $2, permission = $3 \
             WHERE kind = $4 AND id = $5 AND ",
            "$6"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The write first (SQLite never upgrades a read); nothing is committed
            // unless the pattern changes.
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            let before: Option<PatternRow> = sqlx::query_as(before_sql)
                .bind(pattern_kind(kind))
                .bind(id)
                .bind(principal.name())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before.map(PatternGrant::try_from).transpose()? else {
                return Ok(PatternUpdate::Missing);
            };
            let updated = sqlx::query(sql)
                .bind(regex)
                .bind(priority)
                .bind(permission.as_str())
                .bind(pattern_kind(kind))
                .bind(id)
                .bind(principal.name())
                .execute(&mut *tx)
                .await;
            match updated {
                // Another pattern of the principal has that regex (the unique index).
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Ok(PatternUpdate::Conflict)
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            audit!(
                tx,
                actor,
                "pattern.update",
                pattern_target(kind, principal, id),
                Some(pattern_json(
                    &before.regex,
                    before.priority,
                    before.permission
                )),
                Some(pattern_json(regex, priority, permission))
            );
            tx.commit().await?;
            Ok(PatternUpdate::Updated(epoch_of(epoch)))
        })
    }

    /// Removes a pattern grant; the new epoch, or `None` when there was none.
    pub async fn delete_pattern(
        &self,
        kind: ResourceKind,
        principal: Principal<'_>,
        id: i64,
        actor: &str,
    ) -> Result<Option<u64>, StoreError> {
        let sql = by_name!(
            principal,
            "DELETE FROM grant_patterns WHERE kind = $1 AND id = $2 AND ",
            "$3",
            " RETURNING id, regex, priority, permission"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before: Option<PatternRow> = sqlx::query_as(sql)
                .bind(pattern_kind(kind))
                .bind(id)
                .bind(principal.name())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before.map(PatternGrant::try_from).transpose()? else {
                return Ok(None);
            };
            audit!(
                tx,
                actor,
                "pattern.delete",
                pattern_target(kind, principal, id),
                Some(pattern_json(
                    &before.regex,
                    before.priority,
                    before.permission
                )),
                None::<String>
            );
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(epoch_of(epoch)))
        })
    }

    // ---- resource events -------------------------------------------------------

    /// A resource was created: its creator gets MANAGE (their row is created when
    /// missing: the filter verified who they are), and, with `group_default`
    /// (`DEFAULT_MLFLOW_GROUP_PERMISSION`), each of the creator's groups that holds no
    /// grant on it yet gets that. The new epoch.
    pub async fn resource_created(
        &self,
        kind: ResourceKind,
        id: &str,
        creator: &str,
        group_default: Option<Permission>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let kind = GrantKind::of(kind).as_sql();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let who = ensure_principal!(tx, Principal::User(creator), now);
            // The creator ends with MANAGE, whatever they held before (a stale grant
            // on a reused id or name).
            let updated = sqlx::query(
                "UPDATE grants SET permission = $1 \
                 WHERE kind = $2 AND resource = $3 AND user_id = $4",
            )
            .bind(Permission::Manage.as_str())
            .bind(kind)
            .bind(id)
            .bind(who.id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                sqlx::query(
                    "INSERT INTO grants (kind, resource, user_id, permission) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(kind)
                .bind(id)
                .bind(who.id())
                .bind(Permission::Manage.as_str())
                .execute(&mut *tx)
                .await?;
            }
            if let Some(level) = group_default {
                // The WHERE clause also keeps SQLite's parser from reading ON CONFLICT
                // as a join constraint.
                sqlx::query(
                    "INSERT INTO grants (kind, resource, group_id, permission) \
                     SELECT $1, $2, ug.group_id, $3 FROM user_groups ug WHERE ug.user_id = $4 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(kind)
                .bind(id)
                .bind(level.as_str())
                .bind(who.id())
                .execute(&mut *tx)
                .await?;
            }
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(epoch_of(epoch))
        })
    }

    /// A resource was renamed. Registered models and prompts (keyed by name): every
    /// user and group grant moves from `from` to `to`, after the grants already on
    /// `to` are removed. Experiments are keyed by id, so only the epoch moves (pattern
    /// grants see the new name). The new epoch.
    pub async fn resource_renamed(
        &self,
        kind: ResourceKind,
        from: &str,
        to: &str,
    ) -> Result<u64, StoreError> {
        let grant_kind = GrantKind::of(kind);
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if grant_kind == GrantKind::RegisteredModel && from != to {
                sqlx::query("DELETE FROM grants WHERE kind = $1 AND resource = $2")
                    .bind(grant_kind.as_sql())
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE grants SET resource = $1 WHERE kind = $2 AND resource = $3")
                    .bind(to)
                    .bind(grant_kind.as_sql())
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
            }
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(epoch_of(epoch))
        })
    }

    /// A resource was deleted: every user and group grant on it goes. The new epoch.
    pub async fn resource_deleted(&self, kind: ResourceKind, id: &str) -> Result<u64, StoreError> {
        let kind = GrantKind::of(kind).as_sql();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM grants WHERE kind = $1 AND resource = $2")
                .bind(kind)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(epoch_of(epoch))
        })
    }
}
