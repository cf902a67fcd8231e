//! MLflow's REST API, as the policy service reads it to resolve what a request names
//! into the resource that holds the grants: a run, a trace or a logged model into its
//! experiment; an experiment name into its id; an experiment id into its name (for
//! pattern grants); a registered model into a model or a prompt.
//!
//! The service calls the MLflow server directly (`MLFLOW_TRACKING_URI`), never
//! through Envoy. A resource MLflow says does not exist is `Ok(None)`; any other
//! failure (MLflow down, slow, answering 5xx or something unexpected) is an error,
//! which the decision endpoint turns into a 503, never into a decision.
//!
//! What a run, a trace or a logged model belongs to never changes, so those answers
//! are kept (a bounded map); names and tags change (renames, tags), so they are
//! asked every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use openidconnect::reqwest;
use serde_json::Value;
use thiserror::Error;
use url::Url;

use crate::idp::error_chain;
use crate::settings::Settings;

/// Timeout of one call to MLflow (connecting included). The filter's own callout
/// timeout (`callout_timeout_ms`, 2 s by default) bounds the whole decision anyway.
pub const MLFLOW_TIMEOUT: Duration = Duration::from_secs(5);

/// How many run/trace/logged-model → experiment answers are kept.
pub const OWNER_CACHE_ENTRIES: usize = 50_000;

/// The tag that makes a registered model a prompt.
pub const PROMPT_TAG: &str = "mlflow.prompt.is_prompt";

#[derive(Debug, Error)]
pub enum MlflowError {
    #[error("the MLflow server at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the MLflow server answered {url} with HTTP status {status}{detail}")]
    Failed {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the MLflow server's answer to {url} is not what MLflow sends: {detail}")]
    BadAnswer { url: String, detail: String },
    #[error("cannot make the HTTP client for MLflow: {0}")]
    Client(String),
}

/// An experiment, as MLflow names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Experiment {
    pub id: String,
    pub name: String,
}

/// A registered model; a prompt when tagged `mlflow.prompt.is_prompt=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredModel {
    pub name: String,
    pub is_prompt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owned {
    Run,
    Trace,
    LoggedModel,
}

/// A bounded map in two generations: lookups promote to the young one; when the
/// young one is full it becomes the old one and the old one is dropped. So at most
/// `capacity` entries, and those in use survive.
struct Generations {
    young: HashMap<(Owned, String), String>,
    old: HashMap<(Owned, String), String>,
    half: usize,
}

impl Generations {
    fn new(capacity: usize) -> Self {
        Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            half: (capacity / 2).max(1),
        }
    }

    fn get(&mut self, key: &(Owned, String)) -> Option<String> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.clone(), value.clone());
        Some(value)
    }

    fn insert(&mut self, key: (Owned, String), value: String) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

pub struct Mlflow {
    http: reqwest::Client,
    base: Url,
    owners: Mutex<Generations>,
}

impl Mlflow {
    pub fn new(settings: &Settings) -> Result<Self, MlflowError> {
        let http = reqwest::ClientBuilder::new()
            // MLflow's API does not redirect; following one would leave the server.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(MLFLOW_TIMEOUT)
            .connect_timeout(MLFLOW_TIMEOUT)
            .build()
            .map_err(|e| MlflowError::Client(error_chain(&e)))?;
        Ok(Mlflow {
            http,
            base: settings.mlflow_tracking_uri.clone(),
            owners: Mutex::new(Generations::new(OWNER_CACHE_ENTRIES)),
        })
    }

    /// `MLFLOW_TRACKING_URI`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The HTTP client (timeouts set), for other readers of MLflow's API.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `<MLFLOW_TRACKING_URI>/<segments...>?<query>`, the base's own path kept and
    /// each segment percent-encoded.
    pub fn endpoint(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The experiment of a run.
    pub async fn experiment_of_run(&self, run_id: &str) -> Result<Option<String>, MlflowError> {
        let url = self.endpoint(
            &["api", "2.0", "mlflow", "runs", "get"],
            &[("run_id", run_id)],
        );
        self.owner(Owned::Run, run_id, url, &["/run/info/experiment_id"])
            .await
    }

    /// The experiment of a trace (MLflow 3's trace location). A trace kept elsewhere
    /// than in an experiment has none: `None`.
    pub async fn experiment_of_trace(&self, trace_id: &str) -> Result<Option<String>, MlflowError> {
        let url = self.endpoint(&["api", "3.0", "mlflow", "traces", trace_id], &[]);
        self.owner(
            Owned::Trace,
            trace_id,
            url,
            &[
                "/trace/trace_info/trace_location/mlflow_experiment/experiment_id",
                "/trace_info/trace_location/mlflow_experiment/experiment_id",
            ],
        )
        .await
    }

    /// The experiment of a logged model.
    pub async fn experiment_of_logged_model(
        &self,
        model_id: &str,
    ) -> Result<Option<String>, MlflowError> {
        let url = self.endpoint(&["api", "2.0", "mlflow", "logged-models", model_id], &[]);
        self.owner(
            Owned::LoggedModel,
            model_id,
            url,
            &["/model/info/experiment_id"],
        )
        .await
    }

    /// An experiment by id (deleted ones included: MLflow still has them).
    pub async fn experiment(&self, id: &str) -> Result<Option<Experiment>, MlflowError> {
        let url = self.endpoint(
            &["api", "2.0", "mlflow", "experiments", "get"],
            &[("experiment_id", id)],
        );
        self.experiment_at(url).await
    }

    /// An experiment by name.
    pub async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, MlflowError> {
        let url = self.endpoint(
            &["api", "2.0", "mlflow", "experiments", "get-by-name"],
            &[("experiment_name", name)],
        );
        self.experiment_at(url).await
    }

    /// A registered model or prompt by name.
    pub async fn registered_model(
        &self,
        name: &str,
    ) -> Result<Option<RegisteredModel>, MlflowError> {
        let url = self.endpoint(
            &["api", "2.0", "mlflow", "registered-models", "get"],
            &[("name", name)],
        );
        let Some(body) = self.get(&url).await? else {
            return Ok(None);
        };
        let model = &body["registered_model"];
        let Some(name) = model["name"].as_str() else {
            return Err(bad(&url, "no registered_model.name"));
        };
        Ok(Some(RegisteredModel {
            name: name.to_string(),
            is_prompt: is_prompt(model),
        }))
    }

    /// Every active experiment, all pages of MLflow's search, by name.
    pub async fn all_experiments(&self) -> Result<Vec<Experiment>, MlflowError> {
        let mut found = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("max_results", "1000")];
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let url = self.endpoint(&["api", "2.0", "mlflow", "experiments", "search"], &query);
            let body = self.get(&url).await?.unwrap_or_default();
            for e in body["experiments"].as_array().into_iter().flatten() {
                match (e["experiment_id"].as_str(), e["name"].as_str()) {
                    (Some(id), Some(name)) => found.push(Experiment {
                        id: id.to_string(),
                        name: name.to_string(),
                    }),
                    _ => return Err(bad(&url, "an experiment without experiment_id and name")),
                }
            }
            match body["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_string(),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The names of every registered model (`prompts` false) or every prompt
    /// (`prompts` true), all pages of MLflow's search, sorted.
    pub async fn all_model_names(&self, prompts: bool) -> Result<Vec<String>, MlflowError> {
        let filter = format!("tags.`{PROMPT_TAG}` = 'true'");
        let mut found = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("max_results", "1000")];
            if prompts {
                query.push(("filter", filter.as_str()));
            }
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let url = self.endpoint(
                &["api", "2.0", "mlflow", "registered-models", "search"],
                &query,
            );
            let body = self.get(&url).await?.unwrap_or_default();
            for m in body["registered_models"].as_array().into_iter().flatten() {
                let Some(name) = m["name"].as_str() else {
                    return Err(bad(&url, "a registered model without name"));
                };
                // MLflow versions differ in whether a plain search shows prompts.
                if is_prompt(m) == prompts {
                    found.push(name.to_string());
                }
            }
            match body["next_page_token"].as_str() {
                Some(next) if !next.is_empty() => token = next.to_string(),
                _ => break,
            }
        }
        found.sort();
        Ok(found)
    }

    async fn experiment_at(&self, url: Url) -> Result<Option<Experiment>, MlflowError> {
        let Some(body) = self.get(&url).await? else {
            return Ok(None);
        };
        let experiment = &body["experiment"];
        match (
            experiment["experiment_id"].as_str(),
            experiment["name"].as_str(),
        ) {
            (Some(id), Some(name)) => Ok(Some(Experiment {
                id: id.to_string(),
                name: name.to_string(),
            })),
            _ => Err(bad(&url, "no experiment.experiment_id and experiment.name")),
        }
    }

    /// What a run, trace or logged model belongs to: from the map, or from MLflow at
    /// `url`, read at the first of `pointers` present (JSON pointers).
    async fn owner(
        &self,
        what: Owned,
        id: &str,
        url: Url,
        pointers: &[&str],
    ) -> Result<Option<String>, MlflowError> {
        let key = (what, id.to_string());
        if let Some(hit) = self.cached(&key) {
            return Ok(Some(hit));
        }
        let Some(body) = self.get(&url).await? else {
            return Ok(None);
        };
        let found = pointers
            .iter()
            .find_map(|p| body.pointer(p))
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        let experiment_id = match found {
            Some(Some(experiment_id)) if !experiment_id.is_empty() => experiment_id,
            Some(_) => return Err(bad(&url, &format!("{} is not an id", pointers[0]))),
            None if what == Owned::Trace && body.pointer("/trace/trace_info").is_some() => {
                // Kept outside MLflow's experiments (a Unity Catalog location, say):
                // no experiment holds grants for it.
                tracing::debug!(trace_id = id, "trace outside any experiment");
                return Ok(None);
            }
            None => return Err(bad(&url, &format!("no {}", pointers[0]))),
        };
        if let Ok(mut owners) = self.owners.lock() {
            owners.insert(key, experiment_id.clone());
        }
        Ok(Some(experiment_id))
    }

    fn cached(&self, key: &(Owned, String)) -> Option<String> {
        self.owners.lock().ok()?.get(key)
    }

    /// How many owner answers are kept (tests).
    pub fn cached_owners(&self) -> usize {
        self.owners.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// GET `url`: the JSON body of a 200; `None` when MLflow says the resource does
    /// not exist (404 `RESOURCE_DOES_NOT_EXIST`), or that the id cannot name one
    /// (400 `INVALID_PARAMETER_VALUE`, such as a non-numeric experiment id); an error
    /// otherwise.
    async fn get(&self, url: &Url) -> Result<Option<Value>, MlflowError> {
        let response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| MlflowError::Unreachable {
                url: url.to_string(),
                detail: error_chain(&e),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| MlflowError::Unreachable {
                url: url.to_string(),
                detail: error_chain(&e),
            })?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let error_code = json
            .as_ref()
            .and_then(|v| v["error_code"].as_str())
            .unwrap_or_default();
        match status.as_u16() {
            200 => json
                .map(Some)
                .ok_or_else(|| bad(url, "the body is not JSON")),
            404 if error_code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            400 if error_code == "INVALID_PARAMETER_VALUE" => Ok(None),
            code => {
                let message = json
                    .as_ref()
                    .and_then(|v| v["message"].as_str())
                    .map(|m| format!(" ({error_code}: {m})"))
                    .unwrap_or_default();
                Err(MlflowError::Failed {
                    url: url.to_string(),
                    status: code,
                    detail: message,
                })
            }
        }
    }
}

fn bad(url: &Url, detail: &str) -> MlflowError {
    MlflowError::BadAnswer {
        url: url.to_string(),
        detail: detail.to_string(),
    }
}

/// A registered model in MLflow's JSON is a prompt when tagged
/// `mlflow.prompt.is_prompt=true`.
fn is_prompt(model: &Value) -> bool {
    model["tags"].as_array().is_some_and(|tags| {
        tags.iter().any(|tag| {
            tag["key"].as_str() == Some(PROMPT_TAG)
                && tag["value"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_map_stays_bounded_and_keeps_what_is_used() {
        let mut map = Generations::new(4);
        let key = |i: usize| (Owned::Run, format!("r{i}"));
        map.insert(key(0), "e0".into());
        for i in 1..100 {
            map.insert(key(i), format!("e{i}"));
            // r0 is used all along: promoted each time it ages.
            assert_eq!(map.get(&key(0)).as_deref(), Some("e0"));
            assert!(map.len() <= 4, "{}", map.len());
        }
        assert_eq!(map.get(&key(1)), None, "dropped long ago");
        assert_eq!(map.get(&key(99)).as_deref(), Some("e99"));
    }
}
