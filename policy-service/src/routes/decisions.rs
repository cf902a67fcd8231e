//! The filter's side of permissions (`/authz/v1/...`, behind `AUTHZ_SHARED_KEY`):
//! decide a request's targets, serve the policy epoch, record what MLflow did to a
//! resource, filter search answers to what the user may read.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mlflow_edge_authz::wire::{self, DecideRequest, EpochResponse, ListingRequest, ResourceEvent};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::app::AppState;
use crate::listing::{self, ListedKind, ListingError, Pages, Readable};
use crate::permissions::{self, Checker};
use crate::routes::Api;
use crate::store::now;
use crate::web::ApiError;

pub fn api() -> Api {
    Api::new()
        .post(wire::DECIDE_PATH, decide)
        .get(wire::EPOCH_PATH, epoch)
        .post(wire::EVENTS_PATH, event)
        .post(wire::LISTING_PATH, listing)
}

/// What the user holds on each target, in order, read at the returned epoch. MLflow
/// not answering is a 503, never a decision.
async fn decide(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: DecideRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"username\", \"targets\"}}: {e}"
        ))
    })?;
    if request.username.trim().is_empty() {
        return Err(ApiError::BadRequest("username must not be empty".into()));
    }
    let decided = permissions::decide(&state, &request.username, &request.targets).await?;
    Ok(Json(decided).into_response())
}

async fn epoch(State(state): State<AppState>) -> Result<Response, ApiError> {
    let epoch = state.store.epoch().await?;
    Ok(Json(EpochResponse { epoch }).into_response())
}

/// Creation: the creator gets MANAGE and their groups `DEFAULT_MLFLOW_GROUP_PERMISSION`;
/// rename: a model's or prompt's grants follow it; deletion: its grants go. Each moves
/// the epoch, which the answer gives.
async fn event(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let event: ResourceEvent = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be a JSON resource event (created, renamed, deleted): {e}"
        ))
    })?;
    let store = &state.store;
    let epoch = match &event {
        ResourceEvent::Created { kind, id, creator } => {
            let creator = creator.trim().to_lowercase();
            if creator.is_empty() || id.is_empty() {
                return Err(ApiError::BadRequest(
                    "a created event needs an id and a creator".into(),
                ));
            }
            let group_default = state.settings.default_mlflow_group_permission;
            let epoch = store
                .resource_created(*kind, id, &creator, group_default, now())
                .await?;
            tracing::info!(kind = kind.as_str(), %id, %creator, "resource created: creator holds MANAGE");
            epoch
        }
        ResourceEvent::Renamed { kind, from, to } => {
            if from.is_empty() || to.is_empty() {
                return Err(ApiError::BadRequest(
                    "a renamed event needs both names".into(),
                ));
            }
            let epoch = store.resource_renamed(*kind, from, to).await?;
            tracing::info!(kind = kind.as_str(), %from, %to, "resource renamed: grants follow it");
            epoch
        }
        ResourceEvent::Deleted { kind, id } => {
            if id.is_empty() {
                return Err(ApiError::BadRequest("a deleted event needs an id".into()));
            }
            let epoch = store.resource_deleted(*kind, id).await?;
            tracing::info!(kind = kind.as_str(), %id, "resource deleted: its grants removed");
            epoch
        }
    };
    Ok(Json(EpochResponse { epoch }).into_response())
}

/// MLflow's search answer, reduced to the rows the user may read and topped up from
/// further pages. Admins get it as it is. Never the unfiltered rows on a failure.
async fn listing(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: ListingRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be a JSON listing request (username, listing, method, path, response_body): {e}"
        ))
    })?;
    let checker = Checker::new(&state, &request.username).await?;
    if checker.is_admin() {
        return Ok(json_body(request.response_body));
    }
    let readable = UserReads(Mutex::new(checker));
    let pages = MlflowPages(&state);
    match listing::filter_listing(&request, &readable, &pages).await {
        Ok(filtered) => Ok(json_body(filtered)),
        Err(e @ (ListingError::Upstream(_) | ListingError::Permissions(_))) => Err(
            ApiError::Unavailable(format!("the search answer cannot be filtered: {e}")),
        ),
        Err(e) => {
            tracing::warn!(listing = ?request.listing, "cannot filter a search answer: {e}");
            Ok(crate::web::json_response(
                StatusCode::BAD_GATEWAY,
                wire::ErrorBody::new(
                    "BAD_GATEWAY",
                    format!("the search answer cannot be filtered: {e}"),
                )
                .to_json(),
            ))
        }
    }
}

fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Readability through the permission model, one checker for the whole listing.
struct UserReads<'a>(Mutex<Checker<'a>>);

impl Readable for UserReads<'_> {
    async fn readable(&self, kind: ListedKind, ids: &[String]) -> Result<Vec<bool>, ListingError> {
        let mut checker = self.0.lock().await;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let answer = match kind {
                ListedKind::Experiment => checker
                    .experiment(id, None)
                    .await
                    .map_err(|e| ListingError::Permissions(e.to_string()))?,
                ListedKind::RegisteredModel | ListedKind::Prompt => checker
                    .model(id, kind.resource_kind())
                    .await
                    .map_err(|e| ListingError::Permissions(e.to_string()))?,
            };
            out.push(
                answer.source != mlflow_edge_authz::permission::Source::Unresolved
                    && answer.permission.grants_access(),
            );
        }
        Ok(out)
    }
}

/// Further pages of the same search, straight from MLflow (`MLFLOW_TRACKING_URI`).
struct MlflowPages<'a>(&'a AppState);

impl Pages for MlflowPages<'_> {
    async fn fetch(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<&str>,
    ) -> Result<Value, ListingError> {
        let mlflow = &self.0.mlflow;
        // The filter sends MLflow's own path; only /api and /ajax-api paths are searches.
        let api_path = path
            .strip_prefix("/ajax-api/")
            .map(|rest| format!("/api/{rest}"))
            .unwrap_or_else(|| path.to_string());
        if !api_path.starts_with("/api/") {
            return Err(ListingError::MalformedRequest(format!(
                "{path:?} is not an MLflow API path"
            )));
        }
        let mut url = mlflow.base_url().clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{api_path}"));
        url.set_query(if query.is_empty() { None } else { Some(query) });
        let request = match method {
            "POST" => mlflow
                .http()
                .post(url)
                .header(header::CONTENT_TYPE.as_str(), "application/json")
                .body(body.unwrap_or("{}").to_string()),
            _ => mlflow.http().get(url),
        };
        let response = request
            .send()
            .await
            .map_err(|e| ListingError::Upstream(format!("MLflow did not answer: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ListingError::Upstream(format!("MLflow's answer broke off: {e}")))?;
        if !status.is_success() {
            return Err(ListingError::Upstream(format!(
                "MLflow answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| ListingError::MalformedAnswer(format!("MLflow's answer is not JSON: {e}")))
    }
}
