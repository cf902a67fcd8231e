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
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mlflow_edge_authz::permission::{Capability, Permission, ResourceKind, Target};
use mlflow_edge_authz::wire::TargetAnswer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::grants::{GrantKind, PatternGrant, PatternUpdate, Principal};
use crate::permissions::{self, Checker};
use crate::routes::auth::me;
use crate::routes::Api;
use crate::store::{now, UserRecord};
use crate::web::{paged_json, ApiError, Paging};

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
        self.kind.segment()
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

pub fn api() -> Api {
    let base = "/2.0/mlflow/permissions";
    let mut api = Api::new();
    for scope in SCOPES {
        let owner = format!("{base}/{}/{{principal}}", scope.who.segment());
        // Names of models and prompts may hold `/`: the rest of the path.
        let resource = match scope.kind {
            ResourceKind::Experiment => "{resource}",
            ResourceKind::RegisteredModel | ResourceKind::Prompt => "{*resource}",
        };
        let direct = format!("{owner}/{}/{resource}", scope.direct_segment());
        let patterns = format!("{owner}/{}", scope.pattern_segment());
        let pattern = format!("{patterns}/{{id}}");
        api = api
            .twins(
                Method::GET,
                &format!("{owner}/{}", scope.direct_segment()),
                move |s: State<AppState>, h: HeaderMap, p: Path<String>| {
                    principal_resources(s, h, p, scope)
                },
            )
            .twins(
                Method::GET,
                &direct,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                    direct_get(s, h, p, scope)
                },
            )
            .twins(
                Method::POST,
                &direct,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>, b: Bytes| {
                    direct_create(s, h, p, b, scope)
                },
            )
            .twins(
                Method::PATCH,
                &direct,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>, b: Bytes| {
                    direct_update(s, h, p, b, scope)
                },
            )
            .twins(
                Method::DELETE,
                &direct,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                    direct_delete(s, h, p, scope)
                },
            )
            .twins(
                Method::GET,
                &patterns,
                move |s: State<AppState>, h: HeaderMap, p: Path<String>| {
                    patterns_list(s, h, p, scope)
                },
            )
            .twins(
                Method::POST,
                &patterns,
                move |s: State<AppState>, h: HeaderMap, p: Path<String>, b: Bytes| {
                    pattern_create(s, h, p, b, scope)
                },
            )
            .twins(
                Method::GET,
                &pattern,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                    pattern_get(s, h, p, scope)
                },
            )
            .twins(
                Method::PATCH,
                &pattern,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>, b: Bytes| {
                    pattern_update(s, h, p, b, scope)
                },
            )
            .twins(
                Method::DELETE,
                &pattern,
                move |s: State<AppState>, h: HeaderMap, p: Path<(String, String)>| {
                    pattern_delete(s, h, p, scope)
                },
            );
    }
    for kind in KINDS {
        let segment = kind.segment();
        api = api.twins(
            Method::GET,
            &format!("{base}/{segment}"),
            move |s: State<AppState>, h: HeaderMap, q: RawQuery| resources(s, h, q, kind),
        );
        api = match kind {
            ResourceKind::Experiment => {
                let holders = |who: Who| {
                    move |s: State<AppState>, h: HeaderMap, p: Path<String>| {
                        holders(s, h, p.0, kind, who)
                    }
                };
                api.twins(
                    Method::GET,
                    &format!("{base}/{segment}/{{resource}}/users"),
                    holders(Who::User),
                )
                .twins(
                    Method::GET,
                    &format!("{base}/{segment}/{{resource}}/groups"),
                    holders(Who::Group),
                )
            }
            // `{name}/users` where the name may hold `/`: split off the last segment.
            ResourceKind::RegisteredModel | ResourceKind::Prompt => api.twins(
                Method::GET,
                &format!("{base}/{segment}/{{*rest}}"),
                move |s: State<AppState>, h: HeaderMap, Path(rest): Path<String>| async move {
                    match rest.rsplit_once('/') {
                        Some((name, "users")) => {
                            holders(s, h, name.to_string(), kind, Who::User).await
                        }
                        Some((name, "groups")) => {
                            holders(s, h, name.to_string(), kind, Who::Group).await
                        }
                        _ => Ok(crate::app::not_found()),
                    }
                },
            ),
        };
    }
    api
}

/// The kinds of resource grants are managed on.
const KINDS: [ResourceKind; 3] = [
    ResourceKind::Experiment,
    ResourceKind::RegisteredModel,
    ResourceKind::Prompt,
];

trait Segment {
    fn segment(self) -> &'static str;
}

impl Segment for ResourceKind {
    /// The path segment of a kind in the management API.
    fn segment(self) -> &'static str {
        match self {
            ResourceKind::Experiment => "experiments",
            ResourceKind::RegisteredModel => "registered-models",
            ResourceKind::Prompt => "prompts",
        }
    }
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
            &caller.username,
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
            &caller.username,
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
            &caller.username,
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
            &caller.username,
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
            &caller.username,
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
        .delete_pattern(scope.kind, scope.who.principal(&name), id, &caller.username)
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

// ---- listings ---------------------------------------------------------------------

fn mlflow_down(what: &str, source: crate::mlflow::MlflowError) -> ApiError {
    ApiError::from(permissions::DecideError::Mlflow {
        target: what.to_string(),
        source,
    })
}

/// The resources of a kind that MLflow has, as (key, name): experiments by id,
/// models and prompts by name.
async fn all_of(state: &AppState, kind: ResourceKind) -> Result<Vec<(String, String)>, ApiError> {
    Ok(match kind {
        ResourceKind::Experiment => state
            .mlflow
            .all_experiments()
            .await
            .map_err(|e| mlflow_down("every experiment", e))?
            .into_iter()
            .map(|e| (e.id, e.name))
            .collect(),
        ResourceKind::RegisteredModel | ResourceKind::Prompt => state
            .mlflow
            .all_model_names(kind == ResourceKind::Prompt)
            .await
            .map_err(|e| mlflow_down(&format!("every {}", kind.as_str()), e))?
            .into_iter()
            .map(|name| (name.clone(), name))
            .collect(),
    })
}

/// What `checker` holds on one of [`all_of`]'s rows.
async fn held_on(
    checker: &mut Checker<'_>,
    kind: ResourceKind,
    key: &str,
    name: &str,
) -> Result<TargetAnswer, ApiError> {
    Ok(match kind {
        ResourceKind::Experiment => checker.experiment(key, Some(name)).await?,
        ResourceKind::RegisteredModel | ResourceKind::Prompt => checker.model(key, kind).await?,
    })
}

fn row(kind: ResourceKind, key: &str, name: &str) -> Value {
    match kind {
        ResourceKind::Experiment => json!({"id": key, "name": name}),
        ResourceKind::RegisteredModel | ResourceKind::Prompt => json!({"name": name}),
    }
}

/// `GET /permissions/{experiments,registered-models,prompts}`: the resources the
/// caller may manage grants on (admins: all), paged.
async fn resources(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    let paging = Paging::parse(query.as_deref())?;
    let mut rows = all_of(&state, kind).await?;
    rows.retain(|(_, name)| paging.matches(name));
    if !caller.is_admin {
        let mut mine = Checker::new(&state, &caller.username).await?;
        let mut kept = Vec::with_capacity(rows.len());
        for (key, name) in rows {
            if held_on(&mut mine, kind, &key, &name)
                .await?
                .permission
                .allows(Capability::Manage)
            {
                kept.push((key, name));
            }
        }
        rows = kept;
    }
    let (page, total) = paging.apply(rows, |(_, name)| name.as_str());
    let items: Vec<Value> = page.iter().map(|(k, n)| row(kind, k, n)).collect();
    Ok(paged_json(json!(items), total))
}

/// The resource named in a path, as MLflow has it: `None` when it does not exist
/// (or, for the prompt routes, is a model, and the other way round).
async fn existing(
    state: &AppState,
    kind: ResourceKind,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let what = || format!("{} {key}", kind.as_str());
    Ok(match kind {
        ResourceKind::Experiment => state
            .mlflow
            .experiment(key)
            .await
            .map_err(|e| mlflow_down(&what(), e))?
            .map(|e| e.name),
        ResourceKind::RegisteredModel | ResourceKind::Prompt => state
            .mlflow
            .registered_model(key)
            .await
            .map_err(|e| mlflow_down(&what(), e))?
            .filter(|m| m.is_prompt == (kind == ResourceKind::Prompt))
            .map(|m| m.name),
    })
}

fn no_such(kind: ResourceKind, key: &str) -> ApiError {
    ApiError::NotFound(match kind {
        ResourceKind::Experiment => format!("experiment {key} does not exist"),
        ResourceKind::RegisteredModel => format!("registered model {key:?} does not exist"),
        ResourceKind::Prompt => format!("prompt {key:?} does not exist"),
    })
}

/// `GET /permissions/{kind}/{key}/{users,groups}`: who holds a direct grant on it.
/// Needs MANAGE on it (or admin); 404 when MLflow has no such resource.
async fn holders(
    State(state): State<AppState>,
    headers: HeaderMap,
    key: String,
    kind: ResourceKind,
    who: Who,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    let scope = Scope { kind, who };
    may_manage(&state, &caller, scope, &key).await?;
    if existing(&state, kind, &key).await?.is_none() {
        return Err(no_such(kind, &key));
    }
    let wanted = match who {
        Who::User => "user",
        Who::Group => "group",
    };
    let items: Vec<Value> = state
        .store
        .grants_on(GrantKind::of(kind), &key)
        .await?
        .into_iter()
        .filter(|h| h.holder == wanted)
        .map(|h| json!({"name": h.name, "permission": h.permission, "kind": h.holder}))
        .collect();
    Ok(Json(items).into_response())
}

/// `GET /permissions/users/{u}/{kind}`: the user's effective permission on each
/// resource they can reach, with `kind` = the source that decided.
/// `GET /permissions/groups/{g}/{kind}`: the group's direct grants.
/// Admins and the user themself see all; anyone else only what they can MANAGE.
async fn principal_resources(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(principal): Path<String>,
    scope: Scope,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, WHAT).await?;
    let name = scope.who.normalize(&principal);
    let kind = scope.kind;
    let sees_all = caller.is_admin || (scope.who == Who::User && caller.username == name);
    let mut mine = Checker::new(&state, &caller.username).await?;
    let rows = match scope.who {
        Who::User => user_reach(&state, &name, kind).await?,
        Who::Group => group_grants(&state, &name, kind).await?,
    };
    let mut items = Vec::with_capacity(rows.len());
    for (key, label, permission, source) in rows {
        if !sees_all
            && !held_on(&mut mine, kind, &key, &label)
                .await?
                .permission
                .allows(Capability::Manage)
        {
            continue;
        }
        let mut item = row(kind, &key, &label);
        item["permission"] = json!(permission);
        item["kind"] = json!(source);
        items.push(item);
    }
    Ok(Json(items).into_response())
}

/// What a principal holds on a resource: (key, name, permission, source).
type Held = (String, String, Permission, &'static str);

/// A user's effective permissions on the resources of a kind they can reach (not
/// NO_PERMISSIONS); an admin's source is `admin`. Only resources with direct grants can be
/// reached unless the user has pattern grants or the default grants something; then
/// every resource MLflow has is judged.
async fn user_reach(
    state: &AppState,
    username: &str,
    kind: ResourceKind,
) -> Result<Vec<Held>, ApiError> {
    let subject = state
        .store
        .subject(username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {username:?} does not exist")))?;
    let broad = state.settings.default_mlflow_permission != Permission::NoPermissions
        || !state
            .store
            .user_patterns(subject.id, kind)
            .await?
            .is_empty()
        || !state
            .store
            .group_patterns_of_user(subject.id, kind)
            .await?
            .is_empty();
    let candidates: Vec<(String, String)> = if broad || subject.is_admin {
        all_of(state, kind).await?
    } else {
        let mut found = Vec::new();
        for key in state
            .store
            .granted_resources_of_user(subject.id, GrantKind::of(kind))
            .await?
        {
            if let Some(name) = existing(state, kind, &key).await? {
                found.push((key, name));
            }
        }
        found
    };
    let mut theirs = Checker::new(state, username).await?;
    let mut out = Vec::new();
    for (key, name) in candidates {
        if theirs.is_admin() {
            out.push((key, name, Permission::Manage, "admin"));
            continue;
        }
        let held = held_on(&mut theirs, kind, &key, &name).await?;
        if held.permission != Permission::NoPermissions {
            out.push((key, name, held.permission, held.source.as_str()));
        }
    }
    Ok(out)
}

/// A group's direct grants on resources of a kind that MLflow has.
async fn group_grants(
    state: &AppState,
    group: &str,
    kind: ResourceKind,
) -> Result<Vec<Held>, ApiError> {
    let mut out = Vec::new();
    for (key, permission) in state
        .store
        .grants_of_group(GrantKind::of(kind), group)
        .await?
    {
        // Models and prompts share grants: MLflow says which one a name is.
        if let Some(name) = existing(state, kind, &key).await? {
            out.push((key, name, permission, "group"));
        }
    }
    Ok(out)
}
