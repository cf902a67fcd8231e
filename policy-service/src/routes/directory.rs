//! Users and groups as the management API shows them (management-api.md §7.2,
//! "Users" and "Group management"), the current user's profile, and the audit log.
//! Listing names takes a signed-in caller (the UI offers them when granting);
//! everything else about other users, and every write, takes an admin.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::directory::Created;
use crate::routes::auth::me;
use crate::routes::Api;
use crate::store::{now, UserRecord};
use crate::web::{paged_json, ApiError, Paging, MAX_PAGE};

const USERS: &str = "users";
const GROUPS: &str = "groups";

pub fn api() -> Api {
    Api::new()
        .twins(Method::GET, "/2.0/mlflow/users", list_users)
        .twins(Method::POST, "/2.0/mlflow/users", create_user)
        .twins(Method::DELETE, "/2.0/mlflow/users", delete_user)
        .twins(Method::GET, "/2.0/mlflow/users/current", current)
        .twins(Method::GET, "/2.0/mlflow/users/{username}", user)
        .twins(Method::GET, "/2.0/mlflow/permissions/groups", list_groups)
        .twins(Method::POST, "/2.0/mlflow/permissions/groups", create_group)
        .twins(
            Method::GET,
            "/2.0/mlflow/permissions/groups/{principal}/users",
            members,
        )
        .twins(Method::GET, "/2.0/mlflow/permissions/audit", audit_log)
}

async fn admin(state: &AppState, headers: &HeaderMap, doing: &str) -> Result<UserRecord, ApiError> {
    let caller = me(state, headers, USERS).await?;
    if !caller.is_admin {
        return Err(ApiError::Forbidden(format!("only admins {doing}")));
    }
    Ok(caller)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Unprocessable(format!("the body must be JSON {shape}: {e}")))
}

async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    me(&state, &headers, USERS).await?;
    let paging = Paging::parse(query.as_deref())?;
    let (page, total) = paging.apply(state.store.usernames().await?, |n| n.as_str());
    Ok(paged_json(json!(page), total))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

/// A user ahead of their first sign-in, so grants can name them; 409 when they
/// exist. Their groups (and admin status) come from the IdP when they sign in.
async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers, "create users").await?;
    let new: NewUser = body(
        &bytes,
        "{\"username\": string, \"display_name\"?: string, \"is_admin\"?: bool}",
    )?;
    let username = new.username.trim().to_lowercase();
    if username.is_empty() || username.chars().count() > 255 {
        return Err(ApiError::Unprocessable(
            "username must be 1 to 255 characters".into(),
        ));
    }
    let display_name = new
        .display_name
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| username.clone());
    match state
        .store
        .create_user(
            &username,
            &display_name,
            new.is_admin,
            now(),
            &caller.username,
        )
        .await?
    {
        Created::New => {
            tracing::info!(by = %caller.username, %username, is_admin = new.is_admin, "user created");
            Ok((
                StatusCode::CREATED,
                Json(json!({"message": format!("user {username} created"), "username": username})),
            )
                .into_response())
        }
        Created::Existed => Err(ApiError::Conflict(format!(
            "user {username} already exists"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    username: String,
}

/// Deletes a user with their sessions, access tokens, memberships and grants.
async fn delete_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers, "delete users").await?;
    let named: Named = body(&bytes, "{\"username\": string}")?;
    let username = named.username.trim().to_lowercase();
    if username == caller.username {
        return Err(ApiError::BadRequest(
            "admins cannot delete themselves".into(),
        ));
    }
    if !state
        .store
        .delete_user_named(&username, &caller.username)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "user {username:?} does not exist"
        )));
    }
    tracing::info!(by = %caller.username, %username, "user deleted");
    Ok(Json(json!({"message": format!("user {username} deleted")})).into_response())
}

async fn profile(state: &AppState, username: &str) -> Result<Value, ApiError> {
    let user = state
        .store
        .user_detail(username)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {username:?} does not exist")))?;
    serde_json::to_value(user).map_err(|e| ApiError::Internal(e.to_string()))
}

async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, USERS).await?;
    Ok(Json(profile(&state, &caller.username).await?).into_response())
}

async fn user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let caller = me(&state, &headers, USERS).await?;
    let username = username.trim().to_lowercase();
    if !caller.is_admin && caller.username != username {
        return Err(ApiError::Forbidden(
            "only admins look at other users".into(),
        ));
    }
    Ok(Json(profile(&state, &username).await?).into_response())
}

async fn list_groups(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    me(&state, &headers, GROUPS).await?;
    let paging = Paging::parse(query.as_deref())?;
    let (page, total) = paging.apply(state.store.group_names().await?, |n| n.as_str());
    Ok(paged_json(json!({"groups": page}), total))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    group_name: String,
}

/// A group ahead of its members' sign-ins, so grants can name it; idempotent
/// (201 new, 200 when it exists).
async fn create_group(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let caller = admin(&state, &headers, "create groups").await?;
    let new: NewGroup = body(&bytes, "{\"group_name\": string}")?;
    let name = new.group_name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::Unprocessable(
            "group_name must be 1 to 255 characters".into(),
        ));
    }
    let status = match state.store.create_group(name, &caller.username).await? {
        Created::New => StatusCode::CREATED,
        Created::Existed => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({"message": format!("group {name} exists"), "group_name": name})),
    )
        .into_response())
}

async fn members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    admin(&state, &headers, "list the members of groups").await?;
    let members = state
        .store
        .group_members(&group)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("group {group:?} does not exist")))?;
    Ok(Json(members).into_response())
}

/// The audit log, newest first (admins), paged; `search` matches actor, action or
/// target. At most [`MAX_PAGE`] entries a page, 100 without `limit`.
async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&state, &headers, "read the audit log").await?;
    let paging = Paging::parse(query.as_deref())?;
    let limit = paging.limit.unwrap_or(100).min(MAX_PAGE);
    let (entries, total) = state
        .store
        .audit_log(
            &paging.search,
            i64::try_from(limit).unwrap_or(100),
            i64::try_from(paging.offset).unwrap_or(i64::MAX),
        )
        .await?;
    Ok(paged_json(
        json!(entries),
        usize::try_from(total).unwrap_or(0),
    ))
}
