//! Permissions through `app()`: decisions (`/authz/v1/decide`), the epoch, resource
//! events, and the grant management routes. MLflow is a small in-process stand-in
//! (`fake_mlflow`) answering as MLflow 3 does.

use std::cell::Cell;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use mlflow_edge_authz::permission::{Permission, ResourceKind, Source, Target};
use mlflow_edge_authz::wire::{self, DecideResponse, EpochResponse, TargetAnswer};
use serde_json::{json, Value};

use crate::grants::{GrantKind, Principal};
use crate::store::now;
use crate::tests::{body_text, cookie_of, error_body, get, post_json, send, settings, sign_in};
use crate::{app, AppState};

/// MLflow's REST answers for what the service reads, from maps the test fills.
mod fake_mlflow {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::json;

    #[derive(Default)]
    pub struct Data {
        /// id → name
        pub experiments: HashMap<String, String>,
        /// run id → experiment id
        pub runs: HashMap<String, String>,
        pub traces: HashMap<String, String>,
        pub logged_models: HashMap<String, String>,
        /// name → is a prompt
        pub models: HashMap<String, bool>,
        /// Answer 503 to everything.
        pub down: bool,
        /// Requests seen, by path.
        pub calls: HashMap<String, usize>,
    }

    #[derive(Clone)]
    pub struct Mlflow {
        pub url: String,
        pub data: Arc<Mutex<Data>>,
    }

    impl Mlflow {
        pub fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
            f(&mut self.data.lock().unwrap())
        }

        pub fn calls(&self, path: &str) -> usize {
            self.with(|d| d.calls.get(path).copied().unwrap_or(0))
        }
    }

    pub async fn start() -> Mlflow {
        let data = Arc::new(Mutex::new(Data::default()));
        let router = Router::new()
            .route("/api/2.0/mlflow/experiments/get", get(experiment))
            .route("/api/2.0/mlflow/experiments/get-by-name", get(by_name))
            .route("/api/2.0/mlflow/runs/get", get(run))
            .route("/api/3.0/mlflow/traces/{id}", get(trace))
            .route("/api/2.0/mlflow/logged-models/{id}", get(logged_model))
            .route("/api/2.0/mlflow/registered-models/get", get(model))
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Mlflow { url, data }
    }

    type Db = State<Arc<Mutex<Data>>>;
    type Q = Query<HashMap<String, String>>;

    fn missing(what: &str) -> Response {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": format!("{what} not found")})),
        )
            .into_response()
    }

    /// Counts the call; MLflow's answer when it is "down".
    fn enter(data: &mut Data, path: &str) -> Option<Response> {
        *data.calls.entry(path.to_string()).or_default() += 1;
        data.down
            .then(|| (StatusCode::SERVICE_UNAVAILABLE, "upstream down").into_response())
    }

    fn experiment_json(id: &str, name: &str) -> Response {
        Json(
            json!({"experiment": {"experiment_id": id, "name": name, "lifecycle_stage": "active"}}),
        )
        .into_response()
    }

    async fn experiment(State(db): Db, Query(q): Q) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "experiments/get") {
            return r;
        }
        let id = q.get("experiment_id").cloned().unwrap_or_default();
        if id.parse::<u64>().is_err() {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "Experiment ID must be a valid integer."})),
            )
                .into_response();
        }
        match d.experiments.get(&id) {
            Some(name) => experiment_json(&id, name),
            None => missing("experiment"),
        }
    }

    async fn by_name(State(db): Db, Query(q): Q) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "experiments/get-by-name") {
            return r;
        }
        let name = q.get("experiment_name").cloned().unwrap_or_default();
        match d.experiments.iter().find(|(_, n)| **n == name) {
            Some((id, name)) => experiment_json(id, name),
            None => missing("experiment"),
        }
    }

    async fn run(State(db): Db, Query(q): Q) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "runs/get") {
            return r;
        }
        let id = q.get("run_id").cloned().unwrap_or_default();
        match d.runs.get(&id) {
            Some(exp) => {
                Json(json!({"run": {"info": {"run_id": id, "experiment_id": exp}, "data": {}}}))
                    .into_response()
            }
            None => missing("run"),
        }
    }

    async fn trace(State(db): Db, Path(id): Path<String>) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "traces") {
            return r;
        }
        match d.traces.get(&id) {
            // MLflow 3.17's shape (checked against a real server).
            Some(exp) => Json(json!({"trace": {"trace_info": {
                "trace_id": id,
                "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}},
                "state": "OK"
            }}}))
            .into_response(),
            None => missing("trace"),
        }
    }

    async fn logged_model(State(db): Db, Path(id): Path<String>) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "logged-models") {
            return r;
        }
        match d.logged_models.get(&id) {
            Some(exp) => {
                Json(json!({"model": {"info": {"model_id": id, "experiment_id": exp}, "data": {}}}))
                    .into_response()
            }
            None => missing("logged model"),
        }
    }

    async fn model(State(db): Db, Query(q): Q) -> Response {
        let mut d = db.lock().unwrap();
        if let Some(r) = enter(&mut d, "registered-models/get") {
            return r;
        }
        let name = q.get("name").cloned().unwrap_or_default();
        match d.models.get(&name) {
            Some(true) => Json(json!({"registered_model": {"name": name, "tags": [
                {"key": "mlflow.prompt.is_prompt", "value": "true"}
            ]}}))
            .into_response(),
            Some(false) => Json(json!({"registered_model": {"name": name}})).into_response(),
            None => missing("registered model"),
        }
    }
}

use fake_mlflow::Mlflow;

/// A service talking to a fresh stand-in MLflow, with `extra` settings.
async fn setup(extra: &[(&str, &str)]) -> (AppState, Router, Mlflow) {
    let mlflow = fake_mlflow::start().await;
    let mut vars = vec![("MLFLOW_TRACKING_URI", mlflow.url.as_str())];
    vars.extend_from_slice(extra);
    let state = AppState::new(settings(&vars)).await.unwrap();
    let router = app(state.clone());
    (state, router, mlflow)
}

fn experiment(id: &str) -> Target {
    Target::Experiment { id: id.into() }
}

fn model(name: &str) -> Target {
    Target::RegisteredModel { name: name.into() }
}

async fn decide_raw(
    router: &Router,
    username: &str,
    targets: &[Target],
) -> axum::response::Response {
    let body = json!({"username": username, "targets": targets}).to_string();
    send(router, post_json(wire::DECIDE_PATH, &body)).await
}

async fn decide(router: &Router, username: &str, targets: &[Target]) -> DecideResponse {
    let response = decide_raw(router, username, targets).await;
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_str(&body_text(response).await).unwrap()
}

/// The one answer for one target.
async fn one(router: &Router, username: &str, target: Target) -> TargetAnswer {
    let mut decided = decide(router, username, &[target]).await;
    assert_eq!(decided.answers.len(), 1);
    decided.answers.remove(0)
}

/// (permission, source) for one target.
async fn held(router: &Router, username: &str, target: Target) -> (Permission, Source) {
    let answer = one(router, username, target).await;
    (answer.permission, answer.source)
}

async fn epoch(router: &Router) -> u64 {
    let response = send(router, get(wire::EPOCH_PATH, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let epoch: EpochResponse = serde_json::from_str(&body_text(response).await).unwrap();
    epoch.epoch
}

async fn event(router: &Router, event: Value) -> u64 {
    let response = send(router, post_json(wire::EVENTS_PATH, &event.to_string())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let epoch: EpochResponse = serde_json::from_str(&body_text(response).await).unwrap();
    epoch.epoch
}

async fn login(state: &AppState, username: &str, admin: bool, groups: &[&str]) {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    state
        .store
        .record_login(username, username, admin, &groups, now())
        .await
        .unwrap();
}

async fn grant(
    state: &AppState,
    kind: GrantKind,
    resource: &str,
    who: Principal<'_>,
    p: Permission,
) {
    let created = state
        .store
        .create_grant(kind, resource, who, p, now(), "test")
        .await
        .unwrap();
    assert!(created.is_some(), "{resource} {who:?}");
}

async fn pattern(
    state: &AppState,
    kind: ResourceKind,
    who: Principal<'_>,
    regex: &str,
    priority: i64,
    p: Permission,
) {
    let created = state
        .store
        .create_pattern(kind, who, regex, priority, p, now(), "test")
        .await
        .unwrap();
    assert!(created.is_some(), "{regex} {who:?}");
}

use GrantKind::{Experiment as Exp, RegisteredModel as Model};
use Permission::{Edit, Manage, NoPermissions as Deny, Read, Use};
use Principal::{Group, User};

// ---- resolution ----------------------------------------------------------------

#[tokio::test]
async fn the_first_source_holding_a_grant_wins_in_the_configured_order() {
    for (order, expected) in [
        // Default order: the user's own READ beats their group's MANAGE.
        (None, (Read, Source::User)),
        (Some("group,user"), (Manage, Source::Group)),
        (Some("regex,user,group"), (Use, Source::Regex)),
        (Some("group-regex"), (Edit, Source::GroupRegex)),
    ] {
        let extra: Vec<(&str, &str)> = order
            .iter()
            .map(|o| ("PERMISSION_SOURCE_ORDER", *o))
            .collect();
        let (state, router, mlflow) = setup(&extra).await;
        mlflow.with(|d| d.experiments.insert("1".into(), "team-a/exp".into()));
        login(&state, "alice", false, &["team-a"]).await;
        grant(&state, Exp, "1", User("alice"), Read).await;
        grant(&state, Exp, "1", Group("team-a"), Manage).await;
        let user = User("alice");
        pattern(&state, ResourceKind::Experiment, user, "team-a/", 1, Use).await;
        let group = Group("team-a");
        pattern(&state, ResourceKind::Experiment, group, "team-a/", 1, Edit).await;
        assert_eq!(
            held(&router, "alice", experiment("1")).await,
            expected,
            "{order:?}"
        );
    }
}

#[tokio::test]
async fn groups_fold_to_the_strongest_and_an_explicit_deny_beats_manage() {
    let (state, router, _mlflow) = setup(&[]).await;
    login(&state, "alice", false, &["a", "b", "c"]).await;
    grant(&state, Exp, "1", Group("a"), Read).await;
    grant(&state, Exp, "1", Group("b"), Edit).await;
    assert_eq!(
        held(&router, "alice", experiment("1")).await,
        (Edit, Source::Group)
    );
    grant(&state, Exp, "1", Group("c"), Deny).await;
    grant(&state, Exp, "2", Group("a"), Manage).await;
    grant(&state, Exp, "2", Group("c"), Deny).await;
    for id in ["1", "2"] {
        assert_eq!(
            held(&router, "alice", experiment(id)).await,
            (Deny, Source::Group)
        );
    }
    // Someone in none of these groups falls back to the default (MANAGE, the seed's).
    login(&state, "bob", false, &["z"]).await;
    assert_eq!(
        held(&router, "bob", experiment("1")).await,
        (Manage, Source::Fallback)
    );
}

#[tokio::test]
async fn patterns_match_names_from_the_start_and_the_best_priority_tier_decides() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.experiments.insert("1".into(), "team-a/churn".into());
        d.experiments.insert("2".into(), "my-team-a".into());
        d.experiments.insert("3".into(), "team-a/secret".into());
        d.models.insert("team-a-model".into(), false);
        d.models.insert("team-a-prompt".into(), true);
    });
    login(&state, "alice", false, &[]).await;
    let alice = User("alice");
    let kind = ResourceKind::Experiment;
    pattern(&state, kind, alice, "team-a/", 10, Read).await;
    pattern(&state, kind, alice, "team-a/c", 10, Edit).await;
    pattern(&state, kind, alice, "team-a/s", 5, Deny).await;
    pattern(&state, kind, alice, ".*secret", 5, Manage).await;
    pattern(&state, kind, alice, "team-a/churn", 20, Deny).await;
    // Tier 10 (the best with a match): the most capable of READ and EDIT.
    assert_eq!(
        held(&router, "alice", experiment("1")).await,
        (Edit, Source::Regex)
    );
    // re.match: anchored at the start, so "my-team-a" matches no pattern.
    assert_eq!(
        held(&router, "alice", experiment("2")).await,
        (Deny, Source::Fallback)
    );
    // Tier 5: NO_PERMISSIONS beats MANAGE in the same tier.
    assert_eq!(
        held(&router, "alice", experiment("3")).await,
        (Deny, Source::Regex)
    );

    // Model and prompt patterns are separate, and resolved by MLflow's prompt tag.
    pattern(
        &state,
        ResourceKind::RegisteredModel,
        alice,
        "team-a",
        1,
        Use,
    )
    .await;
    pattern(&state, ResourceKind::Prompt, alice, "team-a", 1, Read).await;
    let answer = one(&router, "alice", model("team-a-model")).await;
    assert_eq!((answer.permission, answer.source), (Use, Source::Regex));
    let resource = answer.resource.unwrap();
    assert_eq!(
        (resource.kind, resource.id.as_str()),
        (ResourceKind::RegisteredModel, "team-a-model")
    );
    let answer = one(&router, "alice", model("team-a-prompt")).await;
    assert_eq!((answer.permission, answer.source), (Read, Source::Regex));
    assert_eq!(answer.resource.unwrap().kind, ResourceKind::Prompt);

    // Names are read each time: a renamed experiment meets other patterns.
    mlflow.with(|d| d.experiments.insert("2".into(), "team-a/renamed".into()));
    assert_eq!(
        held(&router, "alice", experiment("2")).await,
        (Read, Source::Regex)
    );
}

#[tokio::test]
async fn group_patterns_and_direct_grants_shared_by_models_and_prompts() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.models.insert("shared".into(), true);
        d.models.insert("ds-model".into(), false);
    });
    login(&state, "alice", false, &["ds"]).await;
    // A direct grant on a name covers the prompt of that name (grants are shared).
    grant(&state, Model, "shared", User("alice"), Edit).await;
    assert_eq!(
        held(&router, "alice", model("shared")).await,
        (Edit, Source::User)
    );
    pattern(
        &state,
        ResourceKind::RegisteredModel,
        Group("ds"),
        "ds-",
        3,
        Edit,
    )
    .await;
    assert_eq!(
        held(&router, "alice", model("ds-model")).await,
        (Edit, Source::GroupRegex)
    );
}

#[tokio::test]
async fn nothing_granted_falls_back_to_the_default() {
    let (_state, router, _mlflow) = setup(&[]).await;
    // A user never seen (a bearer user): no groups, not an admin, the default.
    let decided = decide(&router, "Nobody@Example.com", &[experiment("1")]).await;
    assert!(!decided.admin);
    assert_eq!(decided.answers[0].permission, Manage);
    assert_eq!(decided.answers[0].source, Source::Fallback);

    let (state, router, _mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "READ")]).await;
    login(&state, "alice", false, &[]).await;
    assert_eq!(
        held(&router, "alice", experiment("1")).await,
        (Read, Source::Fallback)
    );
}

#[tokio::test]
async fn admins_are_told_so_and_deactivated_users_hold_nothing() {
    let (state, router, mlflow) = setup(&[]).await;
    mlflow.with(|d| d.runs.insert("r1".into(), "1".into()));
    login(&state, "root", true, &["mlflow-admin"]).await;
    let decided = decide(&router, "root", &[Target::Run { id: "r1".into() }]).await;
    assert!(decided.admin);
    assert_eq!(decided.answers[0].permission, Manage);

    login(&state, "alice", false, &["team"]).await;
    grant(&state, Exp, "1", User("alice"), Manage).await;
    let before = epoch(&router).await;
    state
        .store
        .set_user_active("alice", false, "test")
        .await
        .unwrap();
    let after = epoch(&router).await;
    assert!(after > before, "deactivation moves the epoch");
    let calls = mlflow.calls("runs/get");
    let decided = decide(
        &router,
        "alice",
        &[experiment("1"), Target::Run { id: "r2".into() }],
    )
    .await;
    assert!(!decided.admin);
    for answer in &decided.answers {
        assert_eq!(answer.permission, Deny);
    }
    assert_eq!(
        mlflow.calls("runs/get"),
        calls,
        "nothing is looked up for them"
    );
    // Deactivated admins are no admins either.
    state
        .store
        .set_user_active("root", false, "test")
        .await
        .unwrap();
    assert!(!decide(&router, "root", &[]).await.admin);
    // Reactivated: their grants are back.
    state
        .store
        .set_user_active("alice", true, "test")
        .await
        .unwrap();
    assert!(epoch(&router).await > after);
    assert_eq!(
        held(&router, "alice", experiment("1")).await,
        (Manage, Source::User)
    );
    // Setting the same state again changes nothing.
    let now_epoch = epoch(&router).await;
    state
        .store
        .set_user_active("alice", true, "test")
        .await
        .unwrap();
    assert_eq!(epoch(&router).await, now_epoch);
}

#[tokio::test]
async fn targets_resolve_through_mlflow_in_order_once_each() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.experiments.insert("1".into(), "one".into());
        d.experiments.insert("2".into(), "two".into());
        d.runs.insert("r1".into(), "1".into());
        d.traces.insert("tr-1".into(), "2".into());
        d.logged_models.insert("m-1".into(), "1".into());
        d.models.insert("model".into(), false);
    });
    login(&state, "alice", false, &[]).await;
    grant(&state, Exp, "1", User("alice"), Edit).await;
    grant(&state, Exp, "2", User("alice"), Read).await;
    grant(&state, Model, "model", User("alice"), Use).await;
    let targets = vec![
        Target::Run { id: "r1".into() },
        Target::Trace { id: "tr-1".into() },
        Target::LoggedModel { id: "m-1".into() },
        Target::ExperimentName { name: "two".into() },
        model("model"),
        Target::Run { id: "r1".into() },
        experiment("1"),
    ];
    let decided = decide(&router, "alice", &targets).await;
    let got: Vec<(Permission, Option<(ResourceKind, String)>)> = decided
        .answers
        .iter()
        .map(|a| {
            (
                a.permission,
                a.resource.as_ref().map(|r| (r.kind, r.id.clone())),
            )
        })
        .collect();
    let exp = |id: &str| Some((ResourceKind::Experiment, id.to_string()));
    assert_eq!(
        got,
        vec![
            (Edit, exp("1")),
            (Read, exp("2")),
            (Edit, exp("1")),
            (Read, exp("2")),
            (
                Use,
                Some((ResourceKind::RegisteredModel, "model".to_string()))
            ),
            (Edit, exp("1")),
            (Edit, exp("1")),
        ]
    );
    assert_eq!(
        mlflow.calls("runs/get"),
        1,
        "the repeated run is resolved once"
    );
    // What a run, trace or logged model belongs to is kept; names are not needed
    // without pattern grants, so experiments/get was never called.
    decide(&router, "alice", &targets).await;
    assert_eq!(mlflow.calls("runs/get"), 1);
    assert_eq!(mlflow.calls("traces"), 1);
    assert_eq!(mlflow.calls("logged-models"), 1);
    assert_eq!(mlflow.calls("experiments/get"), 0);
    assert_eq!(
        mlflow.calls("experiments/get-by-name"),
        2,
        "names are asked every time"
    );
    assert_eq!(
        mlflow.calls("registered-models/get"),
        2,
        "tags are asked every time"
    );
}

#[tokio::test]
async fn what_does_not_exist_is_unresolved_and_denied() {
    let (state, router, mlflow) = setup(&[]).await;
    login(&state, "alice", false, &[]).await;
    for target in [
        Target::Run { id: "nope".into() },
        Target::Trace {
            id: "tr-nope".into(),
        },
        Target::LoggedModel {
            id: "m-nope".into(),
        },
        Target::ExperimentName {
            name: "nope".into(),
        },
        model("nope"),
    ] {
        let answer = one(&router, "alice", target.clone()).await;
        assert_eq!(
            (answer.permission, answer.source),
            (Deny, Source::Unresolved),
            "{target}"
        );
        assert_eq!(answer.resource, None);
    }
    // An experiment id is only checked when a pattern needs its name.
    assert_eq!(
        held(&router, "alice", experiment("42")).await,
        (Manage, Source::Fallback)
    );
    assert_eq!(mlflow.calls("experiments/get"), 0);
    pattern(
        &state,
        ResourceKind::Experiment,
        User("alice"),
        "x",
        1,
        Read,
    )
    .await;
    assert_eq!(
        held(&router, "alice", experiment("42")).await,
        (Deny, Source::Unresolved)
    );
    // MLflow's 400 for an id that cannot be one (not a number): unresolved too.
    assert_eq!(
        held(&router, "alice", experiment("abc")).await,
        (Deny, Source::Unresolved)
    );
}

#[tokio::test]
async fn mlflow_failing_is_a_503_never_a_decision() {
    let (state, router, mlflow) = setup(&[]).await;
    login(&state, "alice", false, &[]).await;
    mlflow.with(|d| d.down = true);
    let response = decide_raw(&router, "alice", &[Target::Run { id: "r1".into() }]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = error_body(response).await;
    assert_eq!(error.error_code, "TEMPORARILY_UNAVAILABLE");
    assert!(
        error.message.contains("the experiment of run r1"),
        "{}",
        error.message
    );
    assert!(error.message.contains("503"), "{}", error.message);

    // Nothing listening at all.
    let (state, router, _mlflow) = setup(&[("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")]).await;
    login(&state, "alice", false, &[]).await;
    let response = decide_raw(&router, "alice", &[model("m")]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = error_body(response).await;
    assert!(
        error.message.contains("cannot be reached"),
        "{}",
        error.message
    );
    // A failure is not remembered: MLflow back, the answer comes.
    let (state, router, mlflow) = setup(&[]).await;
    login(&state, "alice", false, &[]).await;
    mlflow.with(|d| {
        d.down = true;
        d.runs.insert("r1".into(), "1".into());
    });
    let response = decide_raw(&router, "alice", &[Target::Run { id: "r1".into() }]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    mlflow.with(|d| d.down = false);
    let answer = one(&router, "alice", Target::Run { id: "r1".into() }).await;
    assert_eq!(answer.permission, Manage);
}

#[tokio::test]
async fn the_internal_api_needs_the_shared_key_when_set() {
    let (_state, router, _mlflow) = setup(&[("AUTHZ_SHARED_KEY", "k")]).await;
    let response = decide_raw(&router, "alice", &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(&router, get(wire::EPOCH_PATH, None)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let request = Request::get(wire::EPOCH_PATH)
        .header(wire::SERVICE_KEY_HEADER, "k")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.status(), StatusCode::OK);
}

// ---- events and the epoch ------------------------------------------------------

#[tokio::test]
async fn creation_gives_the_creator_manage_and_their_groups_the_default() {
    let (state, router, mlflow) = setup(&[
        ("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS"),
        ("DEFAULT_MLFLOW_GROUP_PERMISSION", "READ"),
    ])
    .await;
    mlflow.with(|d| d.models.insert("m".into(), false));
    login(&state, "alice", false, &["team", "other"]).await;
    login(&state, "bob", false, &["team"]).await;
    // A grant the group already has is kept.
    grant(&state, Model, "m", Group("other"), Edit).await;
    let before = epoch(&router).await;
    let after = event(
        &router,
        json!({"event": "created", "kind": "registered_model", "id": "m", "creator": "Alice"}),
    )
    .await;
    assert!(after > before);
    assert_eq!(epoch(&router).await, after);
    assert_eq!(
        held(&router, "alice", model("m")).await,
        (Manage, Source::User)
    );
    assert_eq!(
        held(&router, "bob", model("m")).await,
        (Read, Source::Group)
    );
    let other = state.store.grant(Model, "m", Group("other")).await.unwrap();
    assert_eq!(other, Some(Edit));

    // A creator never seen gets a (non-admin) row and the grant.
    event(
        &router,
        json!({"event": "created", "kind": "experiment", "id": "7", "creator": "carol"}),
    )
    .await;
    let carol = state.store.subject("carol").await.unwrap().unwrap();
    assert!(!carol.is_admin && carol.active);
    assert_eq!(
        held(&router, "carol", experiment("7")).await,
        (Manage, Source::User)
    );
}

#[tokio::test]
async fn without_a_group_default_only_the_creator_gets_a_grant() {
    let (state, router, _mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    login(&state, "alice", false, &["team"]).await;
    login(&state, "bob", false, &["team"]).await;
    event(
        &router,
        json!({"event": "created", "kind": "experiment", "id": "1", "creator": "alice"}),
    )
    .await;
    assert_eq!(
        held(&router, "alice", experiment("1")).await,
        (Manage, Source::User)
    );
    assert_eq!(
        held(&router, "bob", experiment("1")).await,
        (Deny, Source::Fallback)
    );
}

#[tokio::test]
async fn renames_move_grants_and_deletions_remove_them() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.models.insert("new".into(), true);
        d.models.insert("old".into(), true);
    });
    login(&state, "alice", false, &["team"]).await;
    login(&state, "bob", false, &[]).await;
    grant(&state, Model, "old", User("alice"), Manage).await;
    grant(&state, Model, "old", Group("team"), Read).await;
    // Grants already on the new name are cleared first.
    grant(&state, Model, "new", User("bob"), Manage).await;
    let before = epoch(&router).await;
    let after = event(
        &router,
        json!({"event": "renamed", "kind": "prompt", "from": "old", "to": "new"}),
    )
    .await;
    assert!(after > before);
    assert_eq!(
        held(&router, "alice", model("new")).await,
        (Manage, Source::User)
    );
    assert_eq!(
        held(&router, "bob", model("new")).await,
        (Deny, Source::Fallback)
    );
    assert_eq!(
        state
            .store
            .grant(Model, "new", Group("team"))
            .await
            .unwrap(),
        Some(Read)
    );
    assert_eq!(
        state
            .store
            .grant(Model, "old", User("alice"))
            .await
            .unwrap(),
        None
    );
    // Experiments are keyed by id: a rename keeps the grants, moves the epoch.
    grant(&state, Exp, "1", User("alice"), Edit).await;
    let renamed = event(
        &router,
        json!({"event": "renamed", "kind": "experiment", "from": "a", "to": "b"}),
    )
    .await;
    assert!(renamed > after);
    assert_eq!(
        state.store.grant(Exp, "1", User("alice")).await.unwrap(),
        Some(Edit)
    );

    let deleted = event(
        &router,
        json!({"event": "deleted", "kind": "registered_model", "id": "new"}),
    )
    .await;
    assert!(deleted > renamed);
    assert_eq!(
        state
            .store
            .grant(Model, "new", User("alice"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        state
            .store
            .grant(Model, "new", Group("team"))
            .await
            .unwrap(),
        None
    );
    // A bad event is refused, naming what it needs.
    let response = send(
        &router,
        post_json(
            wire::EVENTS_PATH,
            r#"{"event":"created","kind":"experiment","id":"1"}"#,
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_epoch_moves_with_grants_and_with_logins_that_change_something() {
    let (state, router, _mlflow) = setup(&[]).await;
    let last = Cell::new(epoch(&router).await);
    let moved = |now: u64, what: &str| {
        assert!(now > last.get(), "{what}: {now} <= {}", last.get());
        last.set(now);
    };
    login(&state, "alice", false, &["a", "b"]).await;
    moved(epoch(&router).await, "a new user with groups");
    login(&state, "alice", false, &["b", "a", "a"]).await;
    assert_eq!(
        epoch(&router).await,
        last.get(),
        "same admin flag and groups"
    );
    login(&state, "alice", false, &["a"]).await;
    moved(epoch(&router).await, "a group fewer");
    login(&state, "alice", true, &["a"]).await;
    moved(epoch(&router).await, "promoted");
    login(&state, "nogroups", false, &[]).await;
    assert_eq!(
        epoch(&router).await,
        last.get(),
        "a new user without groups changes nothing"
    );

    let store = &state.store;
    let e = store
        .create_grant(Exp, "1", User("alice"), Read, now(), "test")
        .await
        .unwrap()
        .unwrap();
    moved(e, "grant created");
    assert_eq!(epoch(&router).await, e);
    assert_eq!(
        store
            .create_grant(Exp, "1", User("alice"), Edit, now(), "test")
            .await
            .unwrap(),
        None
    );
    assert_eq!(epoch(&router).await, e, "a refused write does not move it");
    moved(
        store
            .update_grant(Exp, "1", User("alice"), Edit, "test")
            .await
            .unwrap()
            .unwrap(),
        "grant changed",
    );
    moved(
        store
            .delete_grant(Exp, "1", User("alice"), "test")
            .await
            .unwrap()
            .unwrap(),
        "grant removed",
    );
    let (p, e) = store
        .create_pattern(
            ResourceKind::Prompt,
            Group("a"),
            "x",
            1,
            Read,
            now(),
            "test",
        )
        .await
        .unwrap()
        .unwrap();
    moved(e, "pattern created");
    let updated = store
        .update_pattern(ResourceKind::Prompt, Group("a"), p.id, "y", 2, Edit, "test")
        .await
        .unwrap();
    let crate::grants::PatternUpdate::Updated(e) = updated else {
        panic!("{updated:?}")
    };
    moved(e, "pattern changed");
    moved(
        store
            .delete_pattern(ResourceKind::Prompt, Group("a"), p.id, "test")
            .await
            .unwrap()
            .unwrap(),
        "pattern removed",
    );
    let id = store.subject("alice").await.unwrap().unwrap().id;
    store.delete_user(id).await.unwrap();
    moved(epoch(&router).await, "user deleted");
}

// ---- management routes ---------------------------------------------------------

fn call(method: Method, uri: &str, cookie: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, format!("mlflow_session={cookie}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Signs `user` in (groups decide admin: `mlflow-admin`); their cookie.
async fn cookie(state: &AppState, user: &str, groups: &[&str]) -> String {
    let response = sign_in(
        state,
        json!({"sub": user, "email": user, "groups": groups}),
        "/",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND, "{user}");
    cookie_of(&response)
}

const P: &str = "/api/2.0/mlflow/permissions";

#[tokio::test]
async fn direct_grants_need_a_session_and_manage_on_the_resource() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.experiments.insert("1".into(), "one".into());
        d.models.insert("team/model".into(), false);
    });
    let admin = cookie(&state, "root@x", &["mlflow-admin"]).await;
    let alice = cookie(&state, "alice@x", &["mlflow"]).await;
    let bob = cookie(&state, "bob@x", &["mlflow"]).await;
    let uri = format!("{P}/users/carol@x/experiments/1");
    let body = || Some(json!({"permission": "READ"}));

    let response = send(&router, call(Method::POST, &uri, None, body())).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(&router, call(Method::POST, &uri, Some(&alice), body())).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let message = error_body(response).await.message;
    assert!(
        message.contains("needs MANAGE") && message.contains("NO_PERMISSIONS"),
        "{message}"
    );

    // The admin makes alice a manager of experiment 1; she may then grant on it.
    let response = send(
        &router,
        call(
            Method::POST,
            &format!("{P}/users/Alice@x/experiments/1"),
            Some(&admin),
            Some(json!({"permission": "MANAGE"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let before = epoch(&router).await;
    let response = send(&router, call(Method::POST, &uri, Some(&alice), body())).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        epoch(&router).await > before,
        "every grant write moves the epoch"
    );
    // carol had no row: she has one now, and the grant works for her.
    assert!(state.store.subject("carol@x").await.unwrap().is_some());
    assert_eq!(
        held(&router, "carol@x", experiment("1")).await,
        (Read, Source::User)
    );
    // Twice: 409. PATCH changes it, DELETE removes it; then both are 404.
    let response = send(&router, call(Method::POST, &uri, Some(&alice), body())).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let response = send(&router, call(Method::GET, &uri, Some(&alice), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let got: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        got,
        json!({"username": "carol@x", "experiment_id": "1", "permission": "READ"})
    );
    let response = send(
        &router,
        call(
            Method::PATCH,
            &uri,
            Some(&alice),
            Some(json!({"permission": "edit"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        held(&router, "carol@x", experiment("1")).await,
        (Edit, Source::User)
    );
    let response = send(&router, call(Method::DELETE, &uri, Some(&alice), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    for method in [Method::PATCH, Method::DELETE] {
        let response = send(&router, call(method.clone(), &uri, Some(&alice), body())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }
    // Bob manages nothing: refused on every verb, before the body is read.
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let response = send(
            &router,
            call(method.clone(), &uri, Some(&bob), Some(json!({}))),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
    }

    // Bad levels and bodies: 422, naming the accepted values.
    let response = send(
        &router,
        call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"permission": "OWNER"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let message = error_body(response).await.message;
    assert!(
        message.contains("\"OWNER\"")
            && message.contains("READ, USE, EDIT, MANAGE, NO_PERMISSIONS"),
        "{message}"
    );
    let response = send(
        &router,
        call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"level": "READ"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Group grants on models (names with '/'), through the /ajax-api twin; the group
    // is created when missing.
    let uri = "/ajax-api/2.0/mlflow/permissions/groups/data-science/registered-models/team/model";
    let response = send(
        &router,
        call(
            Method::POST,
            uri,
            Some(&admin),
            Some(json!({"permission": "USE"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        state
            .store
            .grant(Model, "team/model", Group("data-science"))
            .await
            .unwrap(),
        Some(Use)
    );
    // Prompts share the direct grants of registered models.
    let uri = format!("{P}/groups/data-science/prompts/team/model");
    let response = send(
        &router,
        call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"permission": "READ"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    // A model MLflow does not know: only admins may grant on it.
    let uri = format!("{P}/users/bob@x/registered-models/ghost");
    let response = send(&router, call(Method::POST, &uri, Some(&alice), body())).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let message = error_body(response).await.message;
    assert!(message.contains("unresolved"), "{message}");
    // MLflow down while checking MANAGE: 503, never a pass.
    mlflow.with(|d| d.down = true);
    let uri = format!("{P}/users/bob@x/registered-models/team/model");
    let response = send(&router, call(Method::POST, &uri, Some(&alice), body())).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn pattern_grants_are_for_admins() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| d.experiments.insert("1".into(), "team-a/x".into()));
    let admin = cookie(&state, "root@x", &["mlflow-admin"]).await;
    let alice = cookie(&state, "alice@x", &["mlflow"]).await;
    let uri = format!("{P}/users/alice@x/experiment-patterns");
    let body = json!({"regex": "team-a/", "priority": 1, "permission": "EDIT"});

    let response = send(&router, call(Method::GET, &uri, None, None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(
        &router,
        call(Method::POST, &uri, Some(&alice), Some(body.clone())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(
        &router,
        call(Method::POST, &uri, Some(&admin), Some(body.clone())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = serde_json::from_str(&body_text(response).await).unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["regex"], "team-a/");
    assert_eq!(
        held(&router, "alice@x", experiment("1")).await,
        (Edit, Source::Regex)
    );
    let response = send(
        &router,
        call(Method::POST, &uri, Some(&admin), Some(body.clone())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);

    let response = send(&router, call(Method::GET, &uri, Some(&admin), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["permission"], "EDIT");

    let item = format!("{uri}/{id}");
    let response = send(
        &router,
        call(
            Method::PATCH,
            &item,
            Some(&admin),
            Some(json!({"regex": "team-b/", "priority": 2, "permission": "READ"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&router, call(Method::GET, &item, Some(&admin), None)).await;
    let got: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        (got["regex"].as_str(), got["priority"].as_i64()),
        (Some("team-b/"), Some(2))
    );
    assert_eq!(
        held(&router, "alice@x", experiment("1")).await,
        (Deny, Source::Fallback)
    );

    // Invalid regexes (as `re.match` would read them) and bad bodies: 422.
    for bad in [
        json!({"regex": "team-(", "priority": 1, "permission": "READ"}),
        json!({"regex": "x", "priority": "high", "permission": "READ"}),
        json!({"regex": "x", "priority": 1, "permission": "ALL"}),
    ] {
        let response = send(
            &router,
            call(Method::POST, &uri, Some(&admin), Some(bad.clone())),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let message = error_body(response).await.message;
        assert!(!message.is_empty());
    }
    let response = send(
        &router,
        call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"regex": "team-(", "priority": 1, "permission": "READ"})),
        ),
    )
    .await;
    let message = error_body(response).await.message;
    assert!(message.contains("invalid regex \"team-(\""), "{message}");

    // Another kind, another principal: separate lists; the group is created.
    let groups = format!("{P}/groups/team/prompts-patterns");
    let response = send(
        &router,
        call(Method::POST, &groups, Some(&admin), Some(body.clone())),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = send(
        &router,
        call(
            Method::GET,
            &format!("{P}/groups/team/registered-models-patterns"),
            Some(&admin),
            None,
        ),
    )
    .await;
    assert_eq!(body_text(response).await, "[]");

    // Changing a pattern to a regex the principal already has: 409.
    let response = send(
        &router,
        call(
            Method::POST,
            &uri,
            Some(&admin),
            Some(json!({"regex": "other", "priority": 1, "permission": "READ"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let other: Value = serde_json::from_str(&body_text(response).await).unwrap();
    let response = send(
        &router,
        call(
            Method::PATCH,
            &format!("{uri}/{}", other["id"]),
            Some(&admin),
            Some(json!({"regex": "team-b/", "priority": 1, "permission": "READ"})),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    for method in [Method::GET, Method::DELETE] {
        let response = send(
            &router,
            call(method.clone(), &format!("{uri}/999999"), Some(&admin), None),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method}");
    }
    let response = send(&router, call(Method::DELETE, &item, Some(&alice), None)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = send(&router, call(Method::DELETE, &item, Some(&admin), None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&router, call(Method::DELETE, &item, Some(&admin), None)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_users_experiments_show_the_deciding_source() {
    let (state, router, mlflow) = setup(&[("DEFAULT_MLFLOW_PERMISSION", "NO_PERMISSIONS")]).await;
    mlflow.with(|d| {
        d.experiments.insert("1".into(), "one".into());
        d.experiments.insert("2".into(), "two".into());
    });
    let admin = cookie(&state, "root@x", &["mlflow-admin"]).await;
    let alice = cookie(&state, "alice@x", &["mlflow", "team"]).await;
    let bob = cookie(&state, "bob@x", &["mlflow"]).await;
    grant(&state, Exp, "1", User("alice@x"), Read).await;
    grant(&state, Exp, "2", Group("team"), Edit).await;
    grant(&state, Exp, "2", User("bob@x"), Manage).await;
    let uri = format!("{P}/users/alice@x/experiments");
    let expected = json!([
        {"id": "1", "name": "one", "permission": "READ", "kind": "user"},
        {"id": "2", "name": "two", "permission": "EDIT", "kind": "group"},
    ]);
    for who in [&alice, &admin] {
        let response = send(&router, call(Method::GET, &uri, Some(who), None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let got: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(got, expected);
    }
    // Someone else sees only what they manage.
    let response = send(&router, call(Method::GET, &uri, Some(&bob), None)).await;
    let got: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(got, json!([expected[1]]));
    let response = send(&router, call(Method::GET, &uri, None, None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(
        &router,
        call(
            Method::GET,
            &format!("{P}/users/nobody/experiments"),
            Some(&admin),
            None,
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Writers on a shared database (a SQLite file, or PostgreSQL), as replicas and
/// concurrent requests are: sign-ins, grants, events and deactivations all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_succeed() {
    let db = crate::store::testing::SharedDatabase::new();
    let url = db.url();
    let store = crate::store::Store::connect(&url).await.unwrap();
    let start = store.epoch().await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = crate::store::Store::connect(&url).await.unwrap();
        writers.spawn(async move {
            let user = format!("user{}", i % 3);
            for round in 0..10 {
                let groups = vec![format!("g{}", round % 2), "all".to_string()];
                store
                    .record_login(&user, &user, round % 3 == 0, &groups, now())
                    .await?;
                let resource = format!("{}", round % 4);
                store
                    .create_grant(Exp, &resource, User(&user), Read, now(), "test")
                    .await?;
                store
                    .create_grant(Model, &resource, Group("all"), Edit, now(), "test")
                    .await?;
                store
                    .resource_created(
                        ResourceKind::Experiment,
                        &resource,
                        &user,
                        Some(Read),
                        now(),
                    )
                    .await?;
                store.set_user_active(&user, round % 2 == 0, "test").await?;
                store
                    .delete_grant(Exp, &resource, User(&user), "test")
                    .await?;
            }
            Ok::<(), crate::store::StoreError>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap().unwrap();
    }
    assert!(store.epoch().await.unwrap() > start);
}
