//! Grant management on the upstream paths (management-api.md §7), under
//! `/api/2.0/mlflow/permissions/...` and the `/ajax-api/...` twins. A first part of
//! §7: direct grants of users and groups on experiments, registered models and
//! prompts; their pattern grants; a user's effective permissions on the experiments
//! they hold grants on.
//!
//! The caller is the signed-in browser user of the request's own session cookie (the
//! service never trusts identity headers). Direct grants: admins, or whoever holds
//! MANAGE on the resource (resolved as every decision is). Pattern grants: admins.
//! Errors are JSON in MLflow's shape: 401 not signed in, 403 not allowed, 404 no such
//! grant, 409 it exists already, 422 a body that does not say what is needed.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mlflow_edge_authz::permission::{Capability, Permission, ResourceKind, Target};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::grants::{GrantKind, PatternGrant, PatternUpdate, Principal};
use crate::permissions::{self, Checker};
use crate::routes::auth::me;
use crate::store::{now, UserRecord};
use crate::web::ApiError;

const WHAT: &str = "permissions";

/// Who a route's grants belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    User,
    Group,
}

impl Who {
    fn segment(self) -> &'static str {
        match self {
            Who::User => "users",
            Who::Group => "groups",
        }
    }

    /// The principal named in the path: usernames are stored lower-case, group names
    /// as the IdP spells them.
    fn principal(self, name: &str) -> Principal<'_> {
        match self {
            Who::User => Principal::User(name),
            Who::Group => Principal::Group(name),
        }
    }

    fn normalize(self, name: &str) -> String {
        match self {
            Who::User => name.trim().to_lowercase(),
            Who::Group => name.to_string(),
        }
    }

    fn describe(self, name: &str) -> String {
        match self {
            Who::User => format!("user {name:?}"),
            Who::Group => format!("group {name:?}"),
        }
    }

    fn field(self) -> &'static str {
        match self {
            Who::User => "username",
            Who::Group => "group_name",
        }
    }
}

/// A route family: a kind of resource for users or for groups.
#[derive(Debug, Clone, Copy)]
struct Scope {
    kind: ResourceKind,
    who: Who,
}

impl Scope {
    /// Path segment of direct grants.
    fn direct_segment(self) -> &'static str {
        match self.kind {
            ResourceKind::Experiment => "experiments",
            ResourceKind::RegisteredModel => "registered-models",
            ResourceKind::Prompt => "prompts",
        }
    }

    /// Path segment of pattern grants.
    fn pattern_segment(self) -> &'static str {
        match self.kind {
            ResourceKind::Experiment => "experiment-patterns",
            ResourceKind::RegisteredModel => "registered-models-patterns",
            ResourceKind::Prompt => "prompts-patterns",
        }
    }

    /// The resource as a decision names it.
    fn target(self, resource: &str) -> Target {
        match self.kind {
            ResourceKind::Experiment => Target::Experiment {
                id: resource.to_string(),
            },
            ResourceKind::RegisteredModel | ResourceKind::Prompt => Target::RegisteredModel {
                name: resource.to_string(),
            },
        }
    }

    fn describe(self, resource: &str) -> String {
        match self.kind {
            ResourceKind::Experiment => format!("experiment {resource}"),
            ResourceKind::RegisteredModel => format!("registered model {resource:?}"),
            ResourceKind::Prompt => format!("prompt {resource:?}"),
        }
    }

    fn resource_field(self) -> &'static str {
        match self.kind {
            ResourceKind::Experiment => "experiment_id",
            ResourceKind::RegisteredModel | ResourceKind::Prompt => "name",
        }
    }
}

const SCOPES: [Scope; 6] = [
    Scope {
        kind: ResourceKind::Experiment,
        who: Who::User,
    },
    Scope {
        kind: ResourceKind::Experiment,
        who: Who::Group,
    },
    Scope {
        kind: ResourceKind::RegisteredModel,
        who: Who::User,
    },
    Scope {
        kind: ResourceKind::RegisteredModel,
        who: Who::Group,
    },
    Scope {
        kind: ResourceKind::Prompt,
        who: Who::User,
    },
    Scope {
        kind: ResourceKind::Prompt,
        who: Who::Group,
    },
];

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for api in ["/api", "/ajax-api"] {
        let base = format!("{api}/2.0/mlflow/permissions");
        for scope in SCOPES {
            let owner = format!("{base}/{}/{{principal}}", scope.who.segment());
            // Names of models and prompts may hold `/`: the rest of the path.
            let resource = match scope.kind {
                ResourceKind::Experiment => "{resource}",
                ResourceKind::RegisteredModel | ResourceKind::Prompt => "{*resource}",
            };
            r = r
                .route(
                    &format!("{owner}/{}/{resource}", scope.direct_segment()),
                    get(
                        move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                            direct_get(s, h, p, scope)
                        },
                    )
                    .post(
                        move |s: State<AppState>,
                              h: HeaderMap,
                              p: Path<(String, String)>,
                              b: Bytes| {
                            direct_create(s, h, p, b, scope)
                        },
                    )
                    .patch(
                        move |s: State<AppState>,
                              h: HeaderMap,
                              p: Path<(String, String)>,
                              b: Bytes| {
                            direct_update(s, h, p, b, scope)
                        },
                    )
                    .delete(
                        move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                            direct_delete(s, h, p, scope)
                        },
                    ),
                )
                .route(
                    &format!("{owner}/{}", scope.pattern_segment()),
                    get(move |s: State<AppState>, h: HeaderMap, p: Path<String>| {
                        patterns_list(s, h, p, scope)
                    })
                    .post(
                        move |s: State<AppState>, h: HeaderMap, p: Path<String>, b: Bytes| {
                            pattern_create(s, h, p, b, scope)
                        },
                    ),
                )
                .route(
                    &format!("{owner}/{}/{{id}}", scope.pattern_segment()),
                    get(
                        move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                            pattern_get(s, h, p, scope)
                        },
                    )
                    .patch(
                        move |s: State<AppState>,
                              h: HeaderMap,
                              p: Path<(String, String)>,
                              b: Bytes| {
                            pattern_update(s, h, p, b, scope)
                        },
                    )
                    .delete(
                        move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                            pattern_delete(s, h, p, scope)
                        },
                    ),
                );
        }
        r = r.route(
            &format!("{base}/users/{{principal}}/experiments"),
            get(user_experiments),
        );
    }
    r
}

// ---- bodies ----------------------------------------------------------------------

#[derive(Deserialize)]
struct LevelBody {
    permission: String,
}

#[derive(Deserialize)]
struct PatternBody {
    regex: String,
    priority: i64,
    permission: String,
}

fn level_of(text: &str) -> Result<Permission, ApiError> {
    Permission::parse(text).map_err(ApiError::Unprocessable)
}

fn level_body(body: &[u8]) -> Result<Permission, ApiError> {
    let body: LevelBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::Unprocessable(format!(
            "the body must be JSON {{\"permission\": \"READ|USE|EDIT|MANAGE|NO_PERMISSIONS\"}}: {e}"
        ))
    })?;
    level_of(&body.permission)
}

/// A pattern grant's body: the regex must compile as it will be matched
/// (`^(?:regex)`, Python's `re.match`).
fn pattern_body(body: &[u8]) -> Result<(String, i64, Permission), ApiError> {
    let body: PatternBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::Unprocessable(format!(
            "the body must be JSON {{\"regex\": string, \"priority\": integer, \
             \"permission\": \"READ|USE|EDIT|MANAGE|NO_PERMISSIONS\"}}: {e}"
        ))
    })?;
    permissions::compile(&body.regex)
        .map_err(|e| ApiError::Unprocessable(format!("invalid regex {:?}: {e}", body.regex)))?;
    Ok((body.regex, body.priority, level_of(&body.permission)?))
}

fn pattern_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::NotFound(format!("no pattern grant with id {text:?}")))
}

fn message(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

// ---- guards ----------------------------------------------------------------------

/// The caller may manage grants on `resource`: an admin, or MANAGE on it.
async fn may_manage(
    state: &AppState,
    caller: &UserRecord,
    scope: Scope,
    resource: &str,
) -> Result<(), ApiError> {
    if caller.is_admin {
        return Ok(());
    }
    let target = scope.target(resource);
    let mut checker = Checker::new(state, &caller.username).await?;
    let held = checker.target(&target).await?;
    if held.permission.allows(Capability::Manage) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "managing grants on {} needs MANAGE on it; {} holds {} ({})",
        scope.describe(resource),
        caller.username,
        held.permission,
        held.source.as_str()
    )))
}

async fn admin(state: &AppState, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let caller = me(state, headers, WHAT).await?;
    if !caller.is_admin {
        return Err(ApiError::Forbidden(
            "only admins manage pattern grants".into(),
        ));
    }
    Ok(caller)
}

fn not_empty(what: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::NotFound(format!("{what} must not be empty")));
    }
    Ok(())
}

// ---- direct grants ---------------------------------------------------------------

async fn direct_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, resource)): Path<(String, String)>,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    may_manage(&state, &caller, scope, &resource).await?;
    let name = scope.who.normalize(&principal);
    let held = state
        .store
        .grant(
            GrantKind::of(scope.kind),
            &resource,
            scope.who.principal(&name),
        )
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{} has no grant on {}",
                scope.who.describe(&name),
                scope.describe(&resource)
            ))
        })?;
    Ok(message(
        StatusCode::OK,
        json!({
            scope.who.field(): name,
            scope.resource_field(): resource,
            "permission": held,
        }),
    ))
}

/// Creates the grant. A user or group the grant names that has no row yet gets one
/// (a user who has not signed in yet, a group no member has brought yet), so grants
/// can be given ahead of time.
async fn direct_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, resource)): Path<(String, String)>,
    body: Bytes,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    not_empty(scope.resource_field(), &resource)?;
    not_empty(scope.who.field(), &principal)?;
    may_manage(&state, &caller, scope, &resource).await?;
    let permission = level_body(&body)?;
    let name = scope.who.normalize(&principal);
    let created = state
        .store
        .create_grant(
            GrantKind::of(scope.kind),
            &resource,
            scope.who.principal(&name),
            permission,
            now(),
        )
        .await?;
    if created.is_none() {
        return Err(ApiError::Conflict(format!(
            "{} already has a grant on {}; change it with PATCH",
            scope.who.describe(&name),
            scope.describe(&resource)
        )));
    }
    tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), resource = %scope.describe(&resource), %permission, "grant created");
    Ok(message(
        StatusCode::CREATED,
        json!({
            "message": format!("{} now holds {permission} on {}", scope.who.describe(&name), scope.describe(&resource)),
            scope.who.field(): name,
            scope.resource_field(): resource,
            "permission": permission,
        }),
    ))
}

async fn direct_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, resource)): Path<(String, String)>,
    body: Bytes,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    may_manage(&state, &caller, scope, &resource).await?;
    let permission = level_body(&body)?;
    let name = scope.who.normalize(&principal);
    let updated = state
        .store
        .update_grant(
            GrantKind::of(scope.kind),
            &resource,
            scope.who.principal(&name),
            permission,
        )
        .await?;
    if updated.is_none() {
        return Err(ApiError::NotFound(format!(
            "{} has no grant on {}; create it with POST",
            scope.who.describe(&name),
            scope.describe(&resource)
        )));
    }
    tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), resource = %scope.describe(&resource), %permission, "grant changed");
    Ok(message(
        StatusCode::OK,
        json!({"message": format!("{} now holds {permission} on {}", scope.who.describe(&name), scope.describe(&resource))}),
    ))
}

async fn direct_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, resource)): Path<(String, String)>,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    may_manage(&state, &caller, scope, &resource).await?;
    let name = scope.who.normalize(&principal);
    let deleted = state
        .store
        .delete_grant(
            GrantKind::of(scope.kind),
            &resource,
            scope.who.principal(&name),
        )
        .await?;
    if deleted.is_none() {
        return Err(ApiError::NotFound(format!(
            "{} has no grant on {}",
            scope.who.describe(&name),
            scope.describe(&resource)
        )));
    }
    tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), resource = %scope.describe(&resource), "grant removed");
    Ok(message(
        StatusCode::OK,
        json!({"message": format!("{} no longer has a grant on {}", scope.who.describe(&name), scope.describe(&resource))}),
    ))
}

// ---- pattern grants (admins) -----------------------------------------------------

fn pattern_item(grant: &PatternGrant, scope: Scope, name: &str) -> Value {
    json!({
        "id": grant.id,
        "regex": grant.regex,
        "priority": grant.priority,
        "permission": grant.permission,
        "kind": scope.kind,
        scope.who.field(): name,
    })
}

async fn patterns_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(principal): Path<String>,
    scope: Scope,
) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    let name = scope.who.normalize(&principal);
    let grants = state
        .store
        .patterns(scope.kind, scope.who.principal(&name))
        .await?;
    let items: Vec<Value> = grants
        .iter()
        .map(|g| pattern_item(g, scope, &name))
        .collect();
    Ok(Json(items).into_response())
}

/// Creates a pattern grant; a user or group without a row yet gets one (as for
/// direct grants).
async fn pattern_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(principal): Path<String>,
    body: Bytes,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers).await?;
    not_empty(scope.who.field(), &principal)?;
    let (regex, priority, permission) = pattern_body(&body)?;
    let name = scope.who.normalize(&principal);
    let created = state
        .store
        .create_pattern(
            scope.kind,
            scope.who.principal(&name),
            &regex,
            priority,
            permission,
            now(),
        )
        .await?;
    let Some((grant, _)) = created else {
        return Err(ApiError::Conflict(format!(
            "{} already has a {} pattern grant with regex {regex:?}",
            scope.who.describe(&name),
            scope.kind.as_str()
        )));
    };
    tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), kind = scope.kind.as_str(), %regex, priority, %permission, id = grant.id, "pattern grant created");
    let mut item = pattern_item(&grant, scope, &name);
    item["message"] = json!(format!(
        "{} now holds {permission} on every {} whose name matches {regex:?}",
        scope.who.describe(&name),
        scope.kind.as_str()
    ));
    Ok(message(StatusCode::CREATED, item))
}

async fn pattern_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, id)): Path<(String, String)>,
    scope: Scope,
) -> Result<Response, ApiError> {
    admin(&state, &headers).await?;
    let id = pattern_id(&id)?;
    let name = scope.who.normalize(&principal);
    let grant = state
        .store
        .pattern(scope.kind, scope.who.principal(&name), id)
        .await?
        .ok_or_else(|| missing_pattern(scope, &name, id))?;
    Ok(Json(pattern_item(&grant, scope, &name)).into_response())
}

fn missing_pattern(scope: Scope, name: &str, id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "{} has no {} pattern grant with id {id}",
        scope.who.describe(name),
        scope.kind.as_str()
    ))
}

async fn pattern_update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, id)): Path<(String, String)>,
    body: Bytes,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers).await?;
    let id = pattern_id(&id)?;
    let (regex, priority, permission) = pattern_body(&body)?;
    let name = scope.who.normalize(&principal);
    match state
        .store
        .update_pattern(
            scope.kind,
            scope.who.principal(&name),
            id,
            &regex,
            priority,
            permission,
        )
        .await?
    {
        PatternUpdate::Updated(_) => {
            tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), kind = scope.kind.as_str(), id, %regex, priority, %permission, "pattern grant changed");
            Ok(message(
                StatusCode::OK,
                json!({"message": format!("pattern grant {id} of {} changed", scope.who.describe(&name))}),
            ))
        }
        PatternUpdate::Missing => Err(missing_pattern(scope, &name, id)),
        PatternUpdate::Conflict => Err(ApiError::Conflict(format!(
            "{} already has another {} pattern grant with regex {regex:?}",
            scope.who.describe(&name),
            scope.kind.as_str()
        ))),
    }
}

async fn pattern_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((principal, id)): Path<(String, String)>,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers).await?;
    let id = pattern_id(&id)?;
    let name = scope.who.normalize(&principal);
    if state
        .store
        .delete_pattern(scope.kind, scope.who.principal(&name), id)
        .await?
        .is_none()
    {
        return Err(missing_pattern(scope, &name, id));
    }
    tracing::info!(by = %caller.username, principal = %scope.who.describe(&name), kind = scope.kind.as_str(), id, "pattern grant removed");
    Ok(message(
        StatusCode::OK,
        json!({"message": format!("pattern grant {id} of {} removed", scope.who.describe(&name))}),
    ))
}

// ---- a user's experiments --------------------------------------------------------

/// The user's effective permission on each experiment they (or their groups) hold a
/// direct grant on, with `kind` = the source that decided. Admins and the user see
/// every such experiment; anyone else only those they can MANAGE themselves.
async fn user_experiments(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(principal): Path<String>,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    let username = Who::User.normalize(&principal);
    let subject = state
        .store
        .subject(&username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {username:?} does not exist")))?;
    let ids = state
        .store
        .granted_resources_of_user(subject.id, GrantKind::Experiment)
        .await?;
    let sees_all = caller.is_admin || caller.username == username;
    let mut theirs = Checker::new(&state, &username).await?;
    let mut mine = Checker::new(&state, &caller.username).await?;
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        let experiment = state.mlflow.experiment(&id).await.map_err(|source| {
            ApiError::from(permissions::DecideError::Mlflow {
                target: Target::Experiment { id: id.clone() }.to_string(),
                source,
            })
        })?;
        let name = experiment.as_ref().map(|e| e.name.as_str());
        if !sees_all {
            let held = mine.experiment(&id, name).await?;
            if !held.permission.allows(Capability::Manage) {
                continue;
            }
        }
        let held = theirs.experiment(&id, name).await?;
        items.push(json!({
            "id": id,
            "name": name,
            "permission": held.permission,
            "kind": held.source,
        }));
    }
    Ok(Json(items).into_response())
}
