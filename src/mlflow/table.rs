//! The route table: every route MLflow 3.17 serves (Flask and FastAPI), what it needs
//! of a non-admin, and what follows a 2xx answer. Patterns are written with the `/api`
//! prefix; `/ajax-api` is the same route.
//!
//! In scope today: experiments (runs, metrics, params, tags, artifacts, logged models,
//! traces), registered models and their versions, prompts, and the `/graphql` queries
//! MLflow's UI asks (decided per root field). Every other MLflow family
//! is open to admins only (`FAMILIES`), and so is anything the table does not know.

use serde_json::{Map, Value};

use super::artifacts::{self, Place, SourceRef};
use super::request::{
    bad, field, object, objects, scalar, Field, Reads, Req, EXPERIMENT_ID, EXPERIMENT_IDS,
    EXPERIMENT_NAME, KEY, MODEL_ID, NAME, NEW_NAME, PATH, REQUEST_IDS, RUN, RUN_IDS, SOURCE,
    SOURCE_RUN_ID, TRACE, TRACE_IDS,
};
use super::{Access, After, RequestError};
use crate::permission::{Capability, Requirement, ResourceKind, Target};
use crate::wire::{Listing, ResourceEvent};

use Capability::{Edit, Manage, Read};

/// The tag that makes a registered model a prompt.
pub(crate) const PROMPT_TAG: &str = "mlflow.prompt.is_prompt";
/// The only sources MLflow accepts for a prompt version.
const PROMPT_SOURCES: [&str; 2] = ["dummy-source", "prompt-template"];

/// What a route needs, and what follows its answer.
pub(crate) struct Decision {
    pub access: Access,
    pub after: After,
}

impl Decision {
    fn needs(requirements: Vec<Requirement>) -> Self {
        let mut unique: Vec<Requirement> = Vec::with_capacity(requirements.len());
        for r in requirements {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        Decision {
            access: Access::Resources(unique),
            after: After::Nothing,
        }
    }

    fn admin(why: impl Into<String>) -> Self {
        Decision {
            access: Access::AdminOnly { why: why.into() },
            after: After::Nothing,
        }
    }

    fn then(mut self, after: After) -> Self {
        self.after = after;
        self
    }
}

type Handler = fn(&Req) -> Result<Decision, RequestError>;

/// What one route needs; most are "this capability on the resource this field names".
pub(crate) enum Spec {
    /// Any signed-in user.
    Open,
    /// Admins only, and why.
    Admin(&'static str),
    /// On the experiment of `experiment_id`, or looked up by `experiment_name`.
    Experiment(Capability),
    /// On the experiment of `experiment_id` (no look-up by name).
    ExperimentId(Capability),
    /// On the experiment of the run `run_id` / `run_uuid`.
    Run(Capability),
    /// On the experiment of the trace `trace_id` / `request_id`.
    Trace(Capability),
    /// On the experiment of the logged model `model_id`.
    LoggedModel(Capability),
    /// On the registered model (or prompt) `name`.
    Model(Capability),
    /// As `Model`, and the tag `key` must not be the prompt tag (admins only).
    ModelTag(Capability),
    /// On the experiment whose folder the `artifact_path` path parameter is in.
    Artifact(Capability),
    /// Resources, decided by the request's content.
    Custom(Handler),
    /// A create open to any signed-in user, reported after (the tags may still make
    /// it admins only).
    Create(Handler),
}

pub(crate) struct Rule {
    pub method: &'static str,
    /// Segments after the leading `/`: literals, `{name}` (one segment) and, last,
    /// `{*name}` (the rest of the path, as Werkzeug's `<path:...>`).
    pub pattern: &'static str,
    /// MLflow's RPC name where it has one.
    pub name: &'static str,
    pub reads: Reads,
    pub spec: Spec,
}

const fn rule(
    method: &'static str,
    pattern: &'static str,
    name: &'static str,
    reads: Reads,
    spec: Spec,
) -> Rule {
    Rule {
        method,
        pattern,
        name,
        reads,
        spec,
    }
}

use Reads::{Json, Path as NoIds, Proto, Query};
use Spec::{
    Admin, Artifact, Create, Custom, Experiment as Exp, ExperimentId as ExpId, LoggedModel as Lm,
    Model, ModelTag, Open, Run, Trace,
};

/// Static routes come before routes with parameters where both could match, as
/// Werkzeug prefers them.
#[rustfmt::skip]
pub(crate) static RULES: &[Rule] = &[
    // The UI and server basics.
    rule("GET", "", "serve", NoIds, Open),
    rule("GET", "static-files/{*path}", "serve_static_file", NoIds, Open),
    rule("GET", "build/{*filename}", "static", NoIds, Open),
    rule("GET", "version", "version", NoIds, Open),
    rule("GET", "health", "health", NoIds, Open),
    rule("GET", "api/3.0/mlflow/server-info", "GetServerInfo", NoIds, Open),
    rule("GET", "api/3.0/mlflow/ui-telemetry", "GetUiTelemetry", NoIds, Open),
    rule("POST", "api/3.0/mlflow/ui-telemetry", "PostUiTelemetry", NoIds, Open),
    rule("GET", "api/2.0/mlflow/unified-traces", "SearchUnifiedTraces", NoIds, Open),
    rule("GET", "api/2.0/mlflow/get-online-trace-details", "GetOnlineTraceDetails", NoIds, Open),
    // Proxied artifacts (mlflow-artifacts): the experiment is the artifact path's
    // first folder.
    rule("GET", "api/2.0/mlflow-artifacts/artifacts", "ListArtifacts", Proto, Custom(list_artifact_root)),
    rule("GET", "api/2.0/mlflow-artifacts/artifacts/{*artifact_path}", "DownloadArtifact", NoIds, Artifact(Read)),
    rule("PUT", "api/2.0/mlflow-artifacts/artifacts/{*artifact_path}", "UploadArtifact", NoIds, Artifact(Edit)),
    rule("DELETE", "api/2.0/mlflow-artifacts/artifacts/{*artifact_path}", "DeleteArtifact", NoIds, Artifact(Manage)),
    rule("POST", "api/2.0/mlflow-artifacts/mpu/create/{*artifact_path}", "CreateMultipartUpload", NoIds, Artifact(Edit)),
    rule("POST", "api/2.0/mlflow-artifacts/mpu/complete/{*artifact_path}", "CompleteMultipartUpload", NoIds, Artifact(Edit)),
    rule("POST", "api/2.0/mlflow-artifacts/mpu/abort/{*artifact_path}", "AbortMultipartUpload", NoIds, Artifact(Edit)),
    rule("GET", "api/2.0/mlflow-artifacts/presigned/{*artifact_path}", "GetPresignedDownloadUrl", NoIds, Artifact(Read)),
    // Run artifacts.
    rule("GET", "api/2.0/mlflow/artifacts/list", "ListArtifacts", Proto, Run(Read)),
    rule("POST", "api/2.0/mlflow/artifacts/presigned-download-url", "CreatePresignedDownloadUrl", Proto, Run(Read)),
    rule("POST", "api/2.0/mlflow/artifacts/presigned-upload-url", "CreatePresignedUploadUrl", Proto, Custom(presigned_upload_url)),
    rule("POST", "api/2.0/mlflow/upload-artifact", "upload-artifact", Query, Custom(upload_artifact)),
    rule("GET", "get-artifact", "get-artifact", Query, Run(Read)),
    rule("GET", "model-versions/get-artifact", "model-versions/get-artifact", Query, Model(Read)),
    // Experiments.
    rule("POST", "api/2.0/mlflow/experiments/create", "CreateExperiment", NoIds, Create(create_experiment)),
    rule("POST", "api/2.0/mlflow/experiments/delete", "DeleteExperiment", Proto, ExpId(Manage)),
    rule("POST", "api/2.0/mlflow/experiments/restore", "RestoreExperiment", Proto, ExpId(Manage)),
    rule("POST", "api/2.0/mlflow/experiments/update", "UpdateExperiment", Proto, Exp(Edit)),
    rule("POST", "api/2.0/mlflow/experiments/set-experiment-tag", "SetExperimentTag", Proto, Exp(Edit)),
    rule("POST", "api/2.0/mlflow/experiments/delete-experiment-tag", "DeleteExperimentTag", Proto, Exp(Edit)),
    rule("GET", "api/2.0/mlflow/experiments/get", "GetExperiment", Proto, Exp(Read)),
    rule("GET", "api/2.0/mlflow/experiments/get-by-name", "GetExperimentByName", Proto, Custom(experiment_by_name)),
    rule("GET", "api/2.0/mlflow/experiments/search", "SearchExperiments", Proto, Custom(search_experiments)),
    rule("POST", "api/2.0/mlflow/experiments/search", "SearchExperiments", Proto, Custom(search_experiments)),
    rule("POST", "api/2.0/mlflow/experiments/search-datasets", "SearchDatasets", Proto, Custom(search_datasets)),
    // MLflow registers this misspelt twin too (it answers 404).
    rule("POST", "api/2.0mlflow/experiments/search-datasets", "SearchDatasets", Proto, Custom(search_datasets)),
    // Runs, metrics, params, tags.
    rule("POST", "api/2.0/mlflow/runs/create", "CreateRun", Proto, Exp(Edit)),
    rule("POST", "api/2.0/mlflow/runs/create-promptlab-run", "CreatePromptlabRun", Json, ExpId(Edit)),
    rule("POST", "api/2.0/mlflow/runs/delete", "DeleteRun", Proto, Run(Manage)),
    rule("POST", "api/2.0/mlflow/runs/restore", "RestoreRun", Proto, Run(Manage)),
    rule("GET", "api/2.0/mlflow/runs/get", "GetRun", Proto, Run(Read)),
    rule("POST", "api/2.0/mlflow/runs/update", "UpdateRun", Proto, Run(Edit)),
    rule("POST", "api/2.0/mlflow/runs/set-tag", "SetTag", Proto, Run(Edit)),
    rule("POST", "api/2.0/mlflow/runs/delete-tag", "DeleteTag", Proto, Run(Edit)),
    rule("POST", "api/2.0/mlflow/runs/log-parameter", "LogParam", Proto, Run(Edit)),
    rule("POST", "api/2.0/mlflow/runs/log-model", "LogModel", Proto, Run(Edit)),
    rule("POST", "api/2.0/mlflow/runs/log-metric", "LogMetric", Proto, Custom(log_metric)),
    rule("POST", "api/2.0/mlflow/runs/log-batch", "LogBatch", Proto, Custom(log_batch)),
    rule("POST", "api/2.0/mlflow/runs/log-inputs", "LogInputs", Proto, Custom(log_models_of_run)),
    rule("POST", "api/2.0/mlflow/runs/outputs", "LogOutputs", Proto, Custom(log_models_of_run)),
    rule("POST", "api/2.0/mlflow/runs/search", "SearchRuns", Proto, Custom(search_runs)),
    rule("GET", "api/2.0/mlflow/metrics/get-history", "GetMetricHistory", Proto, Run(Read)),
    rule("GET", "api/2.0/mlflow/metrics/get-history-bulk", "GetMetricHistoryBulk", Query, Custom(metric_history_bulk)),
    rule("GET", "api/2.0/mlflow/metrics/get-history-bulk-interval", "GetMetricHistoryBulkInterval", Proto, Custom(metric_history_bulk)),
    // Logged models.
    rule("POST", "api/2.0/mlflow/logged-models", "CreateLoggedModel", Proto, Custom(create_logged_model)),
    rule("POST", "api/2.0/mlflow/logged-models/search", "SearchLoggedModels", Proto, Custom(search_logged_models)),
    rule("GET", "api/2.0/mlflow/logged-models/{model_id}", "GetLoggedModel", Proto, Lm(Read)),
    rule("PATCH", "api/2.0/mlflow/logged-models/{model_id}", "FinalizeLoggedModel", Proto, Lm(Edit)),
    rule("DELETE", "api/2.0/mlflow/logged-models/{model_id}", "DeleteLoggedModel", Proto, Lm(Manage)),
    rule("GET", "api/2.0/mlflow/logged-models/{model_id}/artifacts/directories", "ListLoggedModelArtifacts", Proto, Lm(Read)),
    rule("GET", "api/2.0/mlflow/logged-models/{model_id}/artifacts/files", "get-logged-model-artifact", Query, Lm(Read)),
    rule("POST", "api/2.0/mlflow/logged-models/{model_id}/params", "LogLoggedModelParams", Proto, Lm(Edit)),
    rule("PATCH", "api/2.0/mlflow/logged-models/{model_id}/tags", "SetLoggedModelTags", Proto, Lm(Edit)),
    rule("DELETE", "api/2.0/mlflow/logged-models/{model_id}/tags/{tag_key}", "DeleteLoggedModelTag", Proto, Lm(Manage)),
    // Traces (v2 and v3) and assessments.
    rule("GET", "api/2.0/mlflow/traces", "SearchTraces", Proto, Custom(search_traces)),
    rule("POST", "api/2.0/mlflow/traces", "StartTrace", Proto, ExpId(Edit)),
    rule("POST", "api/2.0/mlflow/traces/delete-traces", "DeleteTraces", Proto, Custom(delete_traces)),
    rule("POST", "api/2.0/mlflow/traces/link-prompts", "LinkPromptsToTrace", Proto, Custom(link_prompts)),
    rule("POST", "api/2.0/mlflow/traces/link-to-run", "LinkTracesToRun", Proto, Custom(link_traces_to_run)),
    rule("PATCH", "api/2.0/mlflow/traces/{request_id}", "EndTrace", Proto, Trace(Edit)),
    rule("GET", "api/2.0/mlflow/traces/{request_id}/info", "GetTraceInfo", Proto, Trace(Read)),
    rule("PATCH", "api/2.0/mlflow/traces/{request_id}/tags", "SetTraceTag", Proto, Trace(Edit)),
    rule("DELETE", "api/2.0/mlflow/traces/{request_id}/tags", "DeleteTraceTag", Proto, Trace(Edit)),
    rule("GET", "api/2.0/mlflow/get-trace-artifact", "get-trace-artifact", Query, Custom(trace_artifact)),
    rule("GET", "api/3.0/mlflow/get-trace-artifact", "get-trace-artifact", Query, Custom(trace_artifact)),
    rule("POST", "api/3.0/mlflow/traces", "StartTraceV3", Proto, Custom(start_trace_v3)),
    rule("POST", "api/3.0/mlflow/traces/search", "SearchTracesV3", Proto, Custom(search_traces)),
    rule("POST", "api/3.0/mlflow/traces/metrics", "QueryTraceMetrics", Proto, Custom(search_traces)),
    rule("POST", "api/3.0/mlflow/traces/calculate-filter-correlation", "CalculateTraceFilterCorrelation", Proto, Custom(search_traces)),
    rule("POST", "api/3.0/mlflow/traces/delete-traces", "DeleteTracesV3", Proto, Custom(delete_traces)),
    rule("GET", "api/3.0/mlflow/traces/batchGet", "BatchGetTraces", Proto, Custom(batch_get_traces)),
    rule("POST", "api/3.0/mlflow/traces/batchGetInfos", "BatchGetTraceInfos", Proto, Custom(batch_get_traces)),
    rule("GET", "api/3.0/mlflow/traces/get", "GetTrace", Proto, Trace(Read)),
    rule("GET", "api/3.0/mlflow/traces/{trace_id}", "GetTraceInfoV3", Proto, Trace(Read)),
    rule("PATCH", "api/3.0/mlflow/traces/{trace_id}/tags", "SetTraceTagV3", Proto, Trace(Edit)),
    rule("DELETE", "api/3.0/mlflow/traces/{trace_id}/tags", "DeleteTraceTagV3", Proto, Trace(Edit)),
    rule("POST", "api/3.0/mlflow/traces/{trace_id}/assessments", "CreateAssessment", Proto, Trace(Edit)),
    rule("GET", "api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}", "GetAssessmentRequest", Proto, Trace(Read)),
    rule("PATCH", "api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}", "UpdateAssessment", Proto, Trace(Edit)),
    rule("DELETE", "api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}", "DeleteAssessment", Proto, Trace(Edit)),
    // Registered models and prompts.
    rule("POST", "api/2.0/mlflow/registered-models/create", "CreateRegisteredModel", Proto, Create(create_registered_model)),
    rule("GET", "api/2.0/mlflow/registered-models/get", "GetRegisteredModel", Proto, Model(Read)),
    rule("GET", "api/2.0/mlflow/registered-models/search", "SearchRegisteredModels", Proto, Custom(search_registered_models)),
    rule("POST", "api/2.0/mlflow/registered-models/rename", "RenameRegisteredModel", Proto, Custom(rename_registered_model)),
    rule("PATCH", "api/2.0/mlflow/registered-models/update", "UpdateRegisteredModel", Proto, Model(Edit)),
    rule("DELETE", "api/2.0/mlflow/registered-models/delete", "DeleteRegisteredModel", Proto, Custom(delete_registered_model)),
    rule("GET", "api/2.0/mlflow/registered-models/get-latest-versions", "GetLatestVersions", Proto, Model(Read)),
    rule("POST", "api/2.0/mlflow/registered-models/get-latest-versions", "GetLatestVersions", Proto, Model(Read)),
    rule("POST", "api/2.0/mlflow/registered-models/set-tag", "SetRegisteredModelTag", Proto, ModelTag(Edit)),
    rule("DELETE", "api/2.0/mlflow/registered-models/delete-tag", "DeleteRegisteredModelTag", Proto, ModelTag(Edit)),
    rule("POST", "api/2.0/mlflow/registered-models/alias", "SetRegisteredModelAlias", Proto, Model(Edit)),
    rule("DELETE", "api/2.0/mlflow/registered-models/alias", "DeleteRegisteredModelAlias", Proto, Model(Manage)),
    rule("GET", "api/2.0/mlflow/registered-models/alias", "GetModelVersionByAlias", Proto, Model(Read)),
    rule("POST", "api/2.0/mlflow/model-versions/create", "CreateModelVersion", Proto, Custom(create_model_version)),
    rule("GET", "api/2.0/mlflow/model-versions/get", "GetModelVersion", Proto, Model(Read)),
    rule("GET", "api/2.0/mlflow/model-versions/get-download-uri", "GetModelVersionDownloadUri", Proto, Model(Read)),
    rule("GET", "api/2.0/mlflow/model-versions/search", "SearchModelVersions", Proto, Custom(search_model_versions)),
    rule("PATCH", "api/2.0/mlflow/model-versions/update", "UpdateModelVersion", Proto, Model(Edit)),
    rule("POST", "api/2.0/mlflow/model-versions/transition-stage", "TransitionModelVersionStage", Proto, Model(Edit)),
    rule("DELETE", "api/2.0/mlflow/model-versions/delete", "DeleteModelVersion", Proto, Model(Manage)),
    rule("POST", "api/2.0/mlflow/model-versions/set-tag", "SetModelVersionTag", Proto, ModelTag(Edit)),
    rule("DELETE", "api/2.0/mlflow/model-versions/delete-tag", "DeleteModelVersionTag", Proto, ModelTag(Manage)),
    // GraphQL: decided per root field of the query (`graphql`). MLflow reads the JSON
    // body for a GET too.
    rule("GET", "graphql", "graphql", Json, Custom(graphql)),
    rule("POST", "graphql", "graphql", Json, Custom(graphql)),
    // Out of scope for now, with MLflow's own routes named in FAMILIES below.
    rule("POST", "v1/traces", "otlp-traces", NoIds, Admin("otlp trace ingest (/v1/traces) is open to admins only for now")),
];

/// How a family of routes is open.
pub(crate) enum FamilyAccess {
    Open,
    Admin(&'static str),
}

/// Whole families by path prefix (any method): MLflow families out of today's scope,
/// and the policy service's own API, which Envoy routes to it.
pub(crate) struct Family {
    pub prefix: &'static str,
    pub name: &'static str,
    pub access: FamilyAccess,
}

const fn family(prefix: &'static str, name: &'static str, access: FamilyAccess) -> Family {
    Family {
        prefix,
        name,
        access,
    }
}

const GATEWAY: &str = "ai gateway routes are open to admins only for now";
const JOBS: &str = "job routes are open to admins only for now";
const SCORERS: &str = "scorer routes are open to admins only for now";
const SERVICE: FamilyAccess = FamilyAccess::Open;

#[rustfmt::skip]
pub(crate) static FAMILIES: &[Family] = &[
    // The policy service's API (it checks its callers itself).
    family("api/2.0/mlflow/users", "policy-service users", SERVICE),
    family("api/2.0/mlflow/permissions", "policy-service permissions", SERVICE),
    family("api/3.0/mlflow/permissions", "policy-service permissions", SERVICE),
    // MLflow families outside today's scope.
    family("api/2.0/mlflow/webhooks", "webhooks", FamilyAccess::Admin("webhook routes are open to admins only")),
    family("api/3.0/mlflow/datasets", "datasets", FamilyAccess::Admin("evaluation dataset routes are open to admins only for now")),
    family("api/3.0/mlflow/demo", "demo", FamilyAccess::Admin("demo data routes are open to admins only")),
    family("api/3.0/mlflow/gateway", "gateway", FamilyAccess::Admin(GATEWAY)),
    family("api/2.0/mlflow/gateway-proxy", "gateway", FamilyAccess::Admin(GATEWAY)),
    family("gateway", "gateway", FamilyAccess::Admin(GATEWAY)),
    family("api/3.0/mlflow/genai", "genai", FamilyAccess::Admin("genai evaluation routes are open to admins only for now")),
    family("api/3.0/mlflow/issues", "issues", FamilyAccess::Admin("issue routes are open to admins only for now")),
    family("api/3.0/mlflow/jobs", "jobs", FamilyAccess::Admin(JOBS)),
    family("api/3.0/jobs", "jobs", FamilyAccess::Admin(JOBS)),
    family("api/3.0/mlflow/label-schemas", "label-schemas", FamilyAccess::Admin("label schema routes are open to admins only for now")),
    family("api/3.0/mlflow/prompt-optimization", "prompt-optimization", FamilyAccess::Admin("prompt optimization routes are open to admins only for now")),
    family("api/3.0/mlflow/review-queues", "review-queues", FamilyAccess::Admin("review queue routes are open to admins only for now")),
    family("api/3.0/mlflow/scorer", "scorers", FamilyAccess::Admin(SCORERS)),
    family("api/3.0/mlflow/scorers", "scorers", FamilyAccess::Admin(SCORERS)),
    family("api/3.0/mlflow/workspaces", "workspaces", FamilyAccess::Admin("workspace routes are open to admins only for now")),
    family("api/3.0/mlflow/mcp-servers", "mcp-servers", FamilyAccess::Admin("mcp server routes are open to admins only for now")),
    family("api/3.0/mlflow/assistant", "assistant", FamilyAccess::Admin("assistant routes are open to admins only for now")),
];

/// Matches `segments` (the request path's non-empty segments, `/ajax-api` read as
/// `/api`) against a pattern. A path with a trailing slash matches only a pattern
/// ending in `{*rest}` (Werkzeug answers 404 for the others). Returns the parameters
/// and how many segments the fixed part took.
pub(crate) fn match_pattern(
    pattern: &'static str,
    segments: &[&str],
    trailing_slash: bool,
) -> Option<(Vec<(&'static str, String)>, usize)> {
    let mut params = Vec::new();
    let mut parts = pattern.split('/').filter(|p| !p.is_empty()).peekable();
    let mut i = 0;
    while let Some(part) = parts.next() {
        if let Some(name) = part.strip_prefix("{*").and_then(|p| p.strip_suffix('}')) {
            if parts.peek().is_some() {
                return None;
            }
            params.push((name, segments.get(i..).unwrap_or(&[]).join("/")));
            return Some((params, i));
        }
        let segment = segments.get(i)?;
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            params.push((name, (*segment).to_string()));
        } else if part != *segment {
            return None;
        }
        i += 1;
    }
    if i != segments.len() || trailing_slash {
        return None;
    }
    Some((params, i))
}

pub(crate) fn family_matches(prefix: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = prefix.split('/').collect();
    segments.len() >= parts.len() && parts.iter().zip(segments).all(|(a, b)| a == b)
}

/// The decision for a matched rule.
pub(crate) fn decide(rule: &Rule, req: &Req) -> Result<Decision, RequestError> {
    match rule.spec {
        Spec::Open => Ok(Decision {
            access: Access::Authenticated,
            after: After::Nothing,
        }),
        Spec::Admin(why) => Ok(Decision::admin(why)),
        Spec::Experiment(need) => Ok(Decision::needs(experiment_needs(req, need)?)),
        Spec::ExperimentId(need) => {
            let ids = req.ids(&EXPERIMENT_ID, true)?;
            Ok(Decision::needs(each(&ids.all, need, experiment_target)))
        }
        Spec::Run(need) => {
            let ids = req.ids(&RUN, true)?;
            Ok(Decision::needs(each(&ids.all, need, run_target)))
        }
        Spec::Trace(need) => Ok(Decision::needs(trace_needs(req, need)?)),
        Spec::LoggedModel(need) => {
            let ids = req.ids(&MODEL_ID, true)?;
            Ok(Decision::needs(each(&ids.all, need, logged_model_target)))
        }
        Spec::Model(need) => {
            let ids = req.ids(&NAME, true)?;
            Ok(Decision::needs(each(&ids.all, need, model_target)))
        }
        Spec::ModelTag(need) => {
            for key in req.all(&KEY)? {
                if is_prompt_tag_like(&key) {
                    return Ok(Decision::admin(format!(
                        "the tag {key:?} says whether a registered model is a prompt: \
                         setting or deleting it is open to admins only"
                    )));
                }
            }
            let ids = req.ids(&NAME, true)?;
            Ok(Decision::needs(each(&ids.all, need, model_target)))
        }
        Spec::Artifact(need) => artifact(req, need),
        Spec::Custom(handler) | Spec::Create(handler) => handler(req),
    }
}

fn experiment_target(id: &str) -> Target {
    Target::Experiment { id: id.into() }
}
fn run_target(id: &str) -> Target {
    Target::Run { id: id.into() }
}
fn trace_target(id: &str) -> Target {
    Target::Trace { id: id.into() }
}
fn logged_model_target(id: &str) -> Target {
    Target::LoggedModel { id: id.into() }
}
fn model_target(name: &str) -> Target {
    Target::RegisteredModel { name: name.into() }
}

fn each(values: &[String], need: Capability, target: fn(&str) -> Target) -> Vec<Requirement> {
    values
        .iter()
        .map(|v| Requirement::new(target(v), need))
        .collect()
}

fn missing(req: &Req, what: &str) -> RequestError {
    bad(format!(
        "the request gives no {what}{}",
        match (req.reads, req.method) {
            (Reads::Proto, "GET") | (Reads::Query, _) => " in its query string",
            (Reads::Proto | Reads::Json, _) => " in its JSON body",
            (Reads::Path, _) => "",
        }
    ))
}

/// `experiment_id`, or `experiment_name` (looked up by the policy service).
fn experiment_needs(req: &Req, need: Capability) -> Result<Vec<Requirement>, RequestError> {
    let ids = req.ids(&EXPERIMENT_ID, false)?;
    let names = req.ids(&EXPERIMENT_NAME, false)?;
    if ids.primary.is_none() && names.primary.is_none() {
        return Err(missing(req, "experiment_id (or experiment_name)"));
    }
    let mut needs = each(&ids.all, need, experiment_target);
    needs.extend(
        names
            .all
            .iter()
            .map(|n| Requirement::new(Target::ExperimentName { name: n.clone() }, need)),
    );
    Ok(needs)
}

/// The trace of the path or the body, and `assessment.trace_id` where the body
/// carries an assessment (MLflow takes the path's).
fn trace_needs(req: &Req, need: Capability) -> Result<Vec<Requirement>, RequestError> {
    let ids = req.ids(&TRACE, true)?;
    let mut all = ids.all.clone();
    if let Some(assessment) = object(&req.body, "assessment", "the request body")? {
        for name in TRACE.names {
            if let Some(v) = field(assessment, name, "the assessment")? {
                if let Some(id) = scalar(v, name)?.filter(|s| !s.is_empty()) {
                    if let Some(p) = &ids.primary {
                        if *p != id && req.params.iter().any(|(n, _)| TRACE.names.contains(n)) {
                            return Err(bad(format!(
                                "the request path names trace {p:?} but the assessment in its body names {id:?}"
                            )));
                        }
                    }
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
            }
        }
    }
    Ok(each(&all, need, trace_target))
}

fn artifact(req: &Req, need: Capability) -> Result<Decision, RequestError> {
    let path = req
        .params
        .iter()
        .find(|(n, _)| *n == "artifact_path")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    Ok(match artifacts::place(path, "artifact path")? {
        Place::Experiment(id) => Decision::needs(vec![Requirement::new(experiment_target(&id), need)]),
        Place::Root => Decision::admin(
            "the artifact path names no experiment (it is the artifact root): open to admins only",
        ),
        Place::Elsewhere(first) => Decision::admin(format!(
            "the artifact path is under {first:?}, which is not an experiment id: open to admins only"
        )),
    })
}

/// `GET /api/2.0/mlflow-artifacts/artifacts?path=...`: every `path` must be inside a
/// readable experiment; the root listing passes and is filtered.
fn list_artifact_root(req: &Req) -> Result<Decision, RequestError> {
    let mut needs = Vec::new();
    for path in &req.all(&PATH)? {
        match artifacts::place(path, "artifact path")? {
            Place::Root => {}
            Place::Experiment(id) => needs.push(Requirement::new(experiment_target(&id), Read)),
            Place::Elsewhere(first) => {
                return Ok(Decision::admin(format!(
                    "the artifact path is under {first:?}, which is not an experiment id: open to admins only"
                )))
            }
        }
    }
    // MLflow lists `args.get("path")`: the first `path` of the query, even an empty
    // one (`?path=&path=7` lists the root).
    let listed = req
        .query
        .iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.as_str());
    let root = match listed {
        None => true,
        Some(p) => artifacts::place(p, "artifact path")? == Place::Root,
    };
    let decision = Decision::needs(needs);
    Ok(if root {
        decision.then(After::Filter(Listing::ArtifactRoot))
    } else {
        decision
    })
}

/// `/graphql`: what the query's root fields need (see `graphql`).
fn graphql(req: &Req) -> Result<Decision, RequestError> {
    let (access, after) = super::graphql::decide(req.method, &req.query, &req.body)?;
    Ok(Decision { access, after })
}

fn create_experiment(_req: &Req) -> Result<Decision, RequestError> {
    Ok(Decision {
        access: Access::Authenticated,
        after: After::ReportCreated {
            kind: ResourceKind::Experiment,
        },
    })
}

fn experiment_by_name(req: &Req) -> Result<Decision, RequestError> {
    let names = req.ids(&EXPERIMENT_NAME, true)?;
    Ok(Decision::needs(
        names
            .all
            .iter()
            .map(|n| Requirement {
                target: Target::ExperimentName { name: n.clone() },
                need: Read,
                missing_ok: true,
            })
            .collect(),
    ))
}

fn listing(listing: Listing) -> Decision {
    Decision::needs(Vec::new()).then(After::Filter(listing))
}

fn search_experiments(_req: &Req) -> Result<Decision, RequestError> {
    Ok(listing(Listing::Experiments))
}
fn search_registered_models(_req: &Req) -> Result<Decision, RequestError> {
    Ok(listing(Listing::RegisteredModels))
}
fn search_model_versions(_req: &Req) -> Result<Decision, RequestError> {
    Ok(listing(Listing::ModelVersions))
}
fn search_logged_models(_req: &Req) -> Result<Decision, RequestError> {
    Ok(listing(Listing::LoggedModels))
}

/// READ on every `experiment_ids`: an empty list passes (MLflow returns nothing).
fn search_runs(req: &Req) -> Result<Decision, RequestError> {
    let ids = req.all(&EXPERIMENT_IDS)?;
    Ok(Decision::needs(each(&ids, Read, experiment_target)))
}

/// READ on every `experiment_ids`, at least one.
fn search_datasets(req: &Req) -> Result<Decision, RequestError> {
    let ids = req.all(&EXPERIMENT_IDS)?;
    if ids.is_empty() {
        return Err(missing(req, "experiment_ids"));
    }
    Ok(Decision::needs(each(&ids, Read, experiment_target)))
}

/// Trace searches: every experiment of `experiment_ids` (v2) and of
/// `locations[].mlflow_experiment.experiment_id` (v3), at least one.
fn search_traces(req: &Req) -> Result<Decision, RequestError> {
    let mut ids = req.all(&EXPERIMENT_IDS)?;
    for location in objects(&req.body, "locations", "the request body")? {
        let id = location_experiment(location)?.ok_or_else(|| {
            bad("every item of \"locations\" must name an experiment in mlflow_experiment.experiment_id")
        })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(missing(
            req,
            "experiment_ids (or locations[].mlflow_experiment.experiment_id)",
        ));
    }
    Ok(Decision::needs(each(&ids, Read, experiment_target)))
}

/// `trace_location.mlflow_experiment.experiment_id` of a trace location object.
fn location_experiment(location: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    let Some(experiment) = object(location, "mlflow_experiment", "a trace location")? else {
        return Ok(None);
    };
    match field(experiment, "experiment_id", "mlflow_experiment")? {
        Some(v) => Ok(scalar(v, "experiment_id")?.filter(|s| !s.is_empty())),
        None => Ok(None),
    }
}

/// StartTraceV3: EDIT on the experiment the trace is written to; a trace id that
/// already exists needs MANAGE on its experiment (it may move it and overwrite its
/// assessments); a new one does not exist yet.
fn start_trace_v3(req: &Req) -> Result<Decision, RequestError> {
    let info = object(&req.body, "trace", "the request body")?
        .map(|t| object(t, "trace_info", "trace"))
        .transpose()?
        .flatten();
    let Some(info) = info else {
        return Err(missing(req, "trace.trace_info"));
    };
    let experiment = object(info, "trace_location", "trace.trace_info")?
        .map(location_experiment)
        .transpose()?
        .flatten()
        .ok_or_else(|| {
            bad("the request gives no trace.trace_info.trace_location.mlflow_experiment.experiment_id in its JSON body")
        })?;
    let mut needs = vec![Requirement::new(experiment_target(&experiment), Edit)];
    if let Some(v) = field(info, "trace_id", "trace.trace_info")? {
        if let Some(id) = scalar(v, "trace_id")?.filter(|s| !s.is_empty()) {
            needs.push(Requirement {
                target: trace_target(&id),
                need: Manage,
                missing_ok: true,
            });
        }
    }
    Ok(Decision::needs(needs))
}

/// DeleteTraces (v2, v3): MANAGE on every `experiment_id`, and on the experiment of
/// every trace named in `request_ids`.
fn delete_traces(req: &Req) -> Result<Decision, RequestError> {
    let ids = req.ids(&EXPERIMENT_ID, true)?;
    let mut needs = each(&ids.all, Manage, experiment_target);
    needs.extend(each(&req.all(&REQUEST_IDS)?, Manage, trace_target));
    Ok(Decision::needs(needs))
}

/// BatchGetTraces / BatchGetTraceInfos: READ on every trace, at least one.
fn batch_get_traces(req: &Req) -> Result<Decision, RequestError> {
    let traces = req.all(&TRACE_IDS)?;
    if traces.is_empty() {
        return Err(missing(req, "trace_ids"));
    }
    let mut needs = each(&traces, Read, trace_target);
    needs.extend(each(&req.all(&EXPERIMENT_IDS)?, Read, experiment_target));
    Ok(Decision::needs(needs))
}

/// LinkPromptsToTrace: EDIT on the trace, READ on every prompt linked.
fn link_prompts(req: &Req) -> Result<Decision, RequestError> {
    let mut needs = trace_needs(req, Edit)?;
    for version in objects(&req.body, "prompt_versions", "the request body")? {
        if let Some(v) = field(version, "name", "an item of \"prompt_versions\"")? {
            if let Some(name) = scalar(v, "name")?.filter(|s| !s.is_empty()) {
                needs.push(Requirement::new(model_target(&name), Read));
            }
        }
    }
    Ok(Decision::needs(needs))
}

/// LinkTracesToRun: EDIT on the run, READ on every trace linked.
fn link_traces_to_run(req: &Req) -> Result<Decision, RequestError> {
    let runs = req.ids(&RUN, true)?;
    let mut needs = each(&runs.all, Edit, run_target);
    needs.extend(each(&req.all(&TRACE_IDS)?, Read, trace_target));
    Ok(Decision::needs(needs))
}

fn trace_artifact(req: &Req) -> Result<Decision, RequestError> {
    const REQUEST_ID: Field = Field::one(&["request_id", "trace_id"]);
    let ids = req.ids(&REQUEST_ID, true)?;
    Ok(Decision::needs(each(&ids.all, Read, trace_target)))
}

/// CreatePresignedUploadUrl: EDIT on every run and every logged model named; it must
/// name one of them.
fn presigned_upload_url(req: &Req) -> Result<Decision, RequestError> {
    let runs = req.ids(&RUN, false)?;
    let models = req.ids(&MODEL_ID, false)?;
    if runs.primary.is_none() && models.primary.is_none() {
        return Err(missing(req, "run_id or model_id"));
    }
    let mut needs = each(&runs.all, Edit, run_target);
    needs.extend(each(&models.all, Edit, logged_model_target));
    Ok(Decision::needs(needs))
}

/// `/ajax-api/2.0/mlflow/upload-artifact`: MLflow reads `run_uuid` from the query
/// string only; the body is the file.
fn upload_artifact(req: &Req) -> Result<Decision, RequestError> {
    const RUN_UUID: Field = Field::one(&["run_uuid", "run_id"]);
    let ids = req.ids(&RUN_UUID, true)?;
    Ok(Decision::needs(each(&ids.all, Edit, run_target)))
}

/// GetMetricHistoryBulk (`run_id` repeated in the query) and
/// GetMetricHistoryBulkInterval (`run_ids`): READ on every run, at least one.
fn metric_history_bulk(req: &Req) -> Result<Decision, RequestError> {
    let mut runs = req.all(&RUN_IDS)?;
    for id in req.all(&RUN)? {
        if !runs.contains(&id) {
            runs.push(id);
        }
    }
    if runs.is_empty() {
        return Err(missing(req, "run_ids (or run_id)"));
    }
    Ok(Decision::needs(each(&runs, Read, run_target)))
}

/// EDIT on the run, and on the experiment of every logged model the metric is for.
fn log_metric(req: &Req) -> Result<Decision, RequestError> {
    let runs = req.ids(&RUN, true)?;
    let mut needs = each(&runs.all, Edit, run_target);
    needs.extend(each(&req.all(&MODEL_ID)?, Edit, logged_model_target));
    Ok(Decision::needs(needs))
}

/// LogBatch: as LogMetric, for every `metrics[]` item (`model_id`, `run_id`).
fn log_batch(req: &Req) -> Result<Decision, RequestError> {
    let runs = req.ids(&RUN, true)?;
    let mut needs = each(&runs.all, Edit, run_target);
    needs.extend(each(&req.all(&MODEL_ID)?, Edit, logged_model_target));
    for metric in objects(&req.body, "metrics", "the request body")? {
        for (name, target) in [
            ("model_id", logged_model_target as fn(&str) -> Target),
            ("run_id", run_target),
        ] {
            if let Some(v) = field(metric, name, "an item of \"metrics\"")? {
                if let Some(id) = scalar(v, name)?.filter(|s| !s.is_empty()) {
                    needs.push(Requirement::new(target(&id), Edit));
                }
            }
        }
    }
    Ok(Decision::needs(needs))
}

/// LogInputs / LogOutputs: EDIT on the run, READ on every logged model it links.
fn log_models_of_run(req: &Req) -> Result<Decision, RequestError> {
    let runs = req.ids(&RUN, true)?;
    let mut needs = each(&runs.all, Edit, run_target);
    for model in objects(&req.body, "models", "the request body")? {
        if let Some(v) = field(model, "model_id", "an item of \"models\"")? {
            if let Some(id) = scalar(v, "model_id")?.filter(|s| !s.is_empty()) {
                needs.push(Requirement::new(logged_model_target(&id), Read));
            }
        }
    }
    Ok(Decision::needs(needs))
}

/// CreateLoggedModel: EDIT on the experiment, READ on the run it comes from.
fn create_logged_model(req: &Req) -> Result<Decision, RequestError> {
    let mut needs = experiment_needs(req, Edit)?;
    needs.extend(each(&req.all(&SOURCE_RUN_ID)?, Read, run_target));
    Ok(Decision::needs(needs))
}

/// What the tags of a create say about the prompt tag.
enum Kind {
    Model,
    Prompt,
    /// A key that is not the prompt tag but reads like it (`MLflow.Prompt.Is_Prompt`).
    LookAlike(String),
}

fn normalized_tag(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_prompt_tag_like(key: &str) -> bool {
    normalized_tag(key) == PROMPT_TAG
}

/// The `tags` of a create body, as MLflow reads them: the last value of the prompt
/// tag wins, and `true` in any case makes a prompt.
fn prompt_kind(body: &Map<String, Value>) -> Result<Kind, RequestError> {
    let mut last: Option<String> = None;
    for tag in objects(body, "tags", "the request body")? {
        let Some(key) = field(tag, "key", "a tag")?
            .map(|v| scalar(v, "key"))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        if key == PROMPT_TAG {
            let value = field(tag, "value", "a tag")?
                .map(|v| scalar(v, "value"))
                .transpose()?
                .flatten()
                .unwrap_or_default();
            last = Some(value);
        } else if is_prompt_tag_like(&key) {
            return Ok(Kind::LookAlike(key));
        }
    }
    Ok(match last {
        Some(v) if v.to_lowercase() == "true" => Kind::Prompt,
        _ => Kind::Model,
    })
}

fn look_alike(key: &str) -> Decision {
    Decision::admin(format!(
        "the tag {key:?} looks like {PROMPT_TAG:?} but is not it: open to admins only"
    ))
}

/// CreateRegisteredModel: any signed-in user; the creator is reported (a prompt
/// when tagged so).
fn create_registered_model(req: &Req) -> Result<Decision, RequestError> {
    let kind = match prompt_kind(&req.body)? {
        Kind::LookAlike(key) => return Ok(look_alike(&key)),
        Kind::Prompt => ResourceKind::Prompt,
        Kind::Model => ResourceKind::RegisteredModel,
    };
    Ok(Decision {
        access: Access::Authenticated,
        after: After::ReportCreated { kind },
    })
}

fn rename_registered_model(req: &Req) -> Result<Decision, RequestError> {
    let names = req.ids(&NAME, true)?;
    let new_names = req.ids(&NEW_NAME, true)?;
    let (Some(from), Some(to)) = (names.primary.clone(), new_names.primary) else {
        return Err(missing(req, "name and new_name"));
    };
    Ok(
        Decision::needs(each(&names.all, Edit, model_target)).then(After::Report(
            ResourceEvent::Renamed {
                kind: ResourceKind::RegisteredModel,
                from,
                to,
            },
        )),
    )
}

fn delete_registered_model(req: &Req) -> Result<Decision, RequestError> {
    let names = req.ids(&NAME, true)?;
    let Some(id) = names.primary.clone() else {
        return Err(missing(req, "name"));
    };
    Ok(
        Decision::needs(each(&names.all, Manage, model_target)).then(After::Report(
            ResourceEvent::Deleted {
                kind: ResourceKind::RegisteredModel,
                id,
            },
        )),
    )
}

/// CreateModelVersion: EDIT on the registered model (or prompt), READ on the run,
/// logged model, registered model or experiment artifacts the version comes from.
/// A source the filter cannot trace to one of those is open to admins only; a prompt
/// version's source is one of MLflow's placeholders.
fn create_model_version(req: &Req) -> Result<Decision, RequestError> {
    let names = req.ids(&NAME, true)?;
    let prompt = match prompt_kind(&req.body)? {
        Kind::LookAlike(key) => return Ok(look_alike(&key)),
        Kind::Prompt => true,
        Kind::Model => false,
    };
    let mut needs = each(&names.all, Edit, model_target);
    needs.extend(each(&req.all(&RUN)?, Read, run_target));
    needs.extend(each(&req.all(&MODEL_ID)?, Read, logged_model_target));
    let sources = req.ids(&SOURCE, true)?;
    for source in &sources.all {
        if prompt && PROMPT_SOURCES.contains(&source.as_str()) {
            continue;
        }
        match artifacts::source(source)? {
            SourceRef::Target(target) => needs.push(Requirement::new(target, Read)),
            SourceRef::Unknown => {
                return Ok(Decision::admin(format!(
                "the model version source {source:?} names no run (runs:/), logged or registered \
                     model (models:/) or experiment artifacts (mlflow-artifacts:/) the filter can \
                     check: open to admins only"
            )))
            }
        }
    }
    Ok(Decision::needs(needs))
}
