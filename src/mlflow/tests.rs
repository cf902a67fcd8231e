//! The route table against the reference (§5.5 hardening, §6.2 rows in scope).

use super::*;
use crate::permission::{Capability, Requirement, Target};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use Capability::{Edit, Manage, Read};

fn go(method: &str, path: &str, body: Option<&str>) -> Result<Plan, RequestError> {
    let routed = route(method, path);
    plan(&routed, method, path, body.map(str::as_bytes))
}

fn ok(method: &str, path: &str, body: Option<&str>) -> Plan {
    go(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {}", e.message))
}

/// The requirements of a request that must be a resource check.
fn needs(method: &str, path: &str, body: Option<&str>) -> Vec<Requirement> {
    match ok(method, path, body).access {
        Access::Resources(r) => r,
        other => panic!("{method} {path}: expected resources, got {other:?}"),
    }
}

/// Why a request is open to admins only.
fn admin(method: &str, path: &str, body: Option<&str>) -> String {
    match ok(method, path, body).access {
        Access::AdminOnly { why } => why,
        other => panic!("{method} {path}: expected admin only, got {other:?}"),
    }
}

/// The 400 message of a refused request.
fn refused(method: &str, path: &str, body: Option<&str>) -> String {
    match go(method, path, body) {
        Err(e) => e.message,
        Ok(p) => panic!("{method} {path}: expected a 400, got {p:?}"),
    }
}

fn authenticated(method: &str, path: &str, body: Option<&str>) -> Plan {
    let plan = ok(method, path, body);
    assert_eq!(plan.access, Access::Authenticated, "{method} {path}");
    plan
}

fn exp(id: &str, need: Capability) -> Requirement {
    Requirement::new(Target::Experiment { id: id.into() }, need)
}
fn exp_name(name: &str, need: Capability) -> Requirement {
    Requirement::new(Target::ExperimentName { name: name.into() }, need)
}
fn run(id: &str, need: Capability) -> Requirement {
    Requirement::new(Target::Run { id: id.into() }, need)
}
fn trace(id: &str, need: Capability) -> Requirement {
    Requirement::new(Target::Trace { id: id.into() }, need)
}
fn logged(id: &str, need: Capability) -> Requirement {
    Requirement::new(Target::LoggedModel { id: id.into() }, need)
}
fn model(name: &str, need: Capability) -> Requirement {
    Requirement::new(Target::RegisteredModel { name: name.into() }, need)
}

fn is_lower_case_sentence(text: &str) -> bool {
    text.chars().next().is_some_and(|c| !c.is_uppercase())
}

// ---- §5.5 hardening --------------------------------------------------------------

#[test]
fn head_is_get() {
    let get = ok("GET", "/api/2.0/mlflow/runs/get?run_id=r1", None);
    let head = ok("HEAD", "/api/2.0/mlflow/runs/get?run_id=r1", None);
    assert_eq!(get, head);
    assert_eq!(get.access, Access::Resources(vec![run("r1", Read)]));
    // Filtered as GET too.
    assert_eq!(
        ok("HEAD", "/api/2.0/mlflow/experiments/search", None).after,
        After::Filter(Listing::Experiments)
    );
    // Werkzeug upper-cases the method.
    assert_eq!(ok("get", "/api/2.0/mlflow/runs/get?run_id=r1", None), get);
}

#[test]
fn ajax_api_is_api() {
    for (method, path, body) in [
        ("GET", "/api/2.0/mlflow/runs/get?run_id=r1", None),
        (
            "POST",
            "/api/2.0/mlflow/runs/update",
            Some(r#"{"run_id":"r1"}"#),
        ),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/3/a.txt", None),
        ("GET", "/api/3.0/mlflow/traces/tr-1", None),
        (
            "POST",
            "/api/2.0/mlflow/experiments/create",
            Some(r#"{"name":"x"}"#),
        ),
        ("GET", "/api/2.0/mlflow/webhooks", None),
        ("GET", "/api/2.0/mlflow/users/current", None),
    ] {
        let ajax = path.replacen("/api/", "/ajax-api/", 1);
        assert_eq!(ok(method, path, body), ok(method, &ajax, body), "{path}");
        assert_eq!(route(method, path), route(method, &ajax));
    }
    // Routes MLflow serves under /ajax-api only are the same routes under /api.
    assert_eq!(
        needs(
            "POST",
            "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=r1&path=a",
            None
        ),
        vec![run("r1", Edit)]
    );
}

#[test]
fn the_path_is_percent_decoded_before_matching() {
    let expected = vec![run("r1", Read)];
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/r%75ns/get?run_id=r1", None),
        expected
    );
    // `%2F` is a `/` to MLflow's router (uvicorn and Werkzeug decode the path).
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/runs%2Fget?run_id=r1", None),
        expected
    );
    assert_eq!(
        needs("GET", "/api%2F2.0%2fmlflow/runs/get?run_id=r1", None),
        expected
    );
    assert_eq!(route("GET", "/api/2.0/mlflow/runs%2Fget").name, "GetRun");
    // A path parameter is decoded once, as MLflow hands it to the handler.
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/logged-models/m%2D1", None),
        vec![logged("m-1", Read)]
    );
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/logged-models/m%25201", None),
        vec![logged("m%201", Read)]
    );
}

#[test]
fn broken_escapes_and_non_utf8_paths_are_refused() {
    let e = refused("GET", "/api/2.0/mlflow/runs/get%zz?run_id=r1", None);
    assert!(e.contains("percent-escape"), "{e}");
    let e = refused("GET", "/api/2.0/mlflow/runs/get%ff?run_id=r1", None);
    assert!(e.contains("utf-8"), "{e}");
    let e = refused("GET", "/api/2.0/mlflow/runs/get%00?run_id=r1", None);
    assert!(e.contains("control"), "{e}");
    let e = refused("GET", "api/2.0/mlflow/runs/get?run_id=r1", None);
    assert!(e.contains("does not start with '/'"), "{e}");
    let e = refused("GET", "/api/2.0/mlflow/runs/get#x", None);
    assert!(e.contains("fragment"), "{e}");
    assert_eq!(route("GET", "/x%zz").class(), RouteClass::Invalid);
}

#[test]
fn dot_segments_outside_artifact_paths_are_refused() {
    for path in [
        "/api/2.0/mlflow/./runs/get?run_id=r1",
        "/api/2.0/mlflow/x/../runs/get?run_id=r1",
        "/api/2.0/mlflow/x/%2e%2e/runs/get?run_id=r1",
        "/api/2.0/mlflow/x%2F..%2Fruns/get?run_id=r1",
        "/api/2.0/mlflow/users/../runs/get?run_id=r1",
        "/api/2.0/mlflow/logged-models/.",
        "/static-files/../secret",
        "/./",
    ] {
        let e = refused("GET", path, None);
        assert!(e.contains("segment"), "{path}: {e}");
    }
}

#[test]
fn double_slashes_are_merged_as_werkzeug_merges_them() {
    assert_eq!(
        needs("GET", "/api//2.0/mlflow//runs/get?run_id=r1", None),
        vec![run("r1", Read)]
    );
    assert_eq!(route("GET", "//").name, "serve");
}

#[test]
fn a_trailing_slash_is_another_route_for_werkzeug() {
    let r = route("GET", "/api/2.0/mlflow/runs/get/");
    assert_eq!((r.name, r.class()), ("unknown", RouteClass::Unknown));
    // Routes ending in a path parameter take it (with the slash dropped).
    assert_eq!(
        needs("GET", "/api/2.0/mlflow-artifacts/artifacts/4/dir/", None),
        vec![exp("4", Read)]
    );
}

#[test]
fn unknown_routes_are_open_to_admins_only() {
    for (method, path) in [
        ("GET", "/api/2.0/mlflow/no-such-route"),
        ("POST", "/api/2.0/mlflow/runs/get"),
        ("GET", "/API/2.0/mlflow/runs/get"),
        ("GET", "/metrics"),
        ("GET", "/api/3.0/mlflow/workspace-rules"),
    ] {
        let routed = route(method, path);
        assert_eq!(routed.name, "unknown", "{method} {path}");
        assert_eq!(routed.class(), RouteClass::Unknown);
        assert!(!routed.reads_body());
        let why = admin(method, path, None);
        assert!(
            why.contains(path) && why.ends_with("is not an MLflow route the filter knows"),
            "{why}"
        );
    }
    // The query string is not part of the message.
    let why = admin("GET", "/nope?secret=1", None);
    assert!(!why.contains("secret"), "{why}");
}

#[test]
fn options_on_a_known_path_needs_a_sign_in_only() {
    authenticated("OPTIONS", "/api/2.0/mlflow/runs/get", None);
    authenticated("OPTIONS", "/api/2.0/mlflow/webhooks", None);
    assert_eq!(route("OPTIONS", "/nope").name, "unknown");
}

#[test]
fn every_value_of_an_id_in_any_source_and_spelling_must_pass() {
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/runs/get?run_id=a&run_uuid=b&runId=c&runUuid=d&run_id=e",
            None
        ),
        vec![
            run("a", Read),
            run("b", Read),
            run("c", Read),
            run("d", Read),
            run("e", Read)
        ]
    );
    // MLflow reads the body of a POST; the query's values must pass too.
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/update?run_id=q",
            Some(r#"{"run_uuid":"b"}"#)
        ),
        vec![run("b", Edit), run("q", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/set-tag",
            Some(r#"{"run_id":"a","runUuid":"b","key":"k","value":"v"}"#)
        ),
        vec![run("a", Edit), run("b", Edit)]
    );
    // The same value twice is one requirement.
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/runs/get?run_id=a&runId=a", None),
        vec![run("a", Read)]
    );
    // An empty value names nothing (MLflow reads it as unset).
    assert_eq!(
        needs("GET", "/get-artifact?run_id=&run_uuid=b&path=x", None),
        vec![run("b", Read)]
    );
}

#[test]
fn one_field_in_both_spellings_in_a_body_is_refused() {
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/update",
        Some(r#"{"run_id":"a","runId":"b"}"#),
    );
    assert!(e.contains("\"run_id\"") && e.contains("\"runId\""), "{e}");
    // Any field, not only ids (MLflow refuses it for every proto field).
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/update",
        Some(r#"{"run_id":"a","end_time":1,"endTime":2}"#),
    );
    assert!(e.contains("\"endTime\""), "{e}");
    // Nested fields the filter reads, too.
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(r#"{"run_id":"a","metrics":[{"model_id":"m1","modelId":"m2"}]}"#),
    );
    assert!(e.contains("\"modelId\""), "{e}");
}

#[test]
fn a_body_giving_a_key_twice_is_refused() {
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/update",
        Some(r#"{"run_id":"a","run_id":"b"}"#),
    );
    assert!(e.contains("appears twice"), "{e}");
}

#[test]
fn a_path_id_and_a_different_body_or_query_id_are_refused() {
    let e = refused(
        "PATCH",
        "/api/2.0/mlflow/traces/tr-1",
        Some(r#"{"request_id":"tr-2"}"#),
    );
    assert!(e.contains("\"tr-1\"") && e.contains("\"tr-2\""), "{e}");
    let e = refused("GET", "/api/3.0/mlflow/traces/tr-1?trace_id=tr-2", None);
    assert!(e.contains("query string"), "{e}");
    // The same id in both is fine.
    assert_eq!(
        needs(
            "PATCH",
            "/api/2.0/mlflow/traces/tr-1",
            Some(r#"{"request_id":"tr-1"}"#)
        ),
        vec![trace("tr-1", Edit)]
    );
    // An assessment naming another trace than the path.
    let e = refused(
        "POST",
        "/api/3.0/mlflow/traces/tr-1/assessments",
        Some(r#"{"assessment":{"trace_id":"tr-2","assessment_name":"x"}}"#),
    );
    assert!(e.contains("assessment"), "{e}");
}

#[test]
fn a_get_with_a_body_on_a_proto_route_is_refused() {
    for method in ["GET", "HEAD"] {
        let e = refused(
            method,
            "/api/2.0/mlflow/runs/get",
            Some(r#"{"run_id":"r1"}"#),
        );
        assert!(
            e.contains("must not have a body") && e.contains("GetRun"),
            "{e}"
        );
        let e = refused(
            method,
            "/api/2.0/mlflow/runs/get?run_id=r1",
            Some(r#"{"run_id":"r2"}"#),
        );
        assert!(e.contains("must not have a body"), "{e}");
    }
    // A blank body is no body.
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/runs/get?run_id=r1", Some(" \r\n")),
        vec![run("r1", Read)]
    );
    // Plain handlers never read a GET body.
    assert_eq!(
        needs("GET", "/get-artifact?run_id=r1&path=a", Some("{}")),
        vec![run("r1", Read)]
    );
}

#[test]
fn a_body_that_is_not_json_is_refused_saying_why() {
    let e = refused("POST", "/api/2.0/mlflow/runs/update", Some("run_id=r1"));
    assert!(e.starts_with("the request body is not valid JSON: "), "{e}");
    let e = refused("POST", "/api/2.0/mlflow/runs/update", Some("[\"r1\"]"));
    assert!(e.contains("must be a JSON object, not a list"), "{e}");
    let e = refused("POST", "/api/2.0/mlflow/runs/update", Some("null"));
    assert!(e.contains("not null"), "{e}");
    // Old clients double-encode it: MLflow decodes it once more, so do we.
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/update",
            Some(r#""{\"run_id\": \"r1\"}""#)
        ),
        vec![run("r1", Edit)]
    );
}

#[test]
fn a_required_id_missing_everywhere_is_refused_naming_it() {
    let e = refused("POST", "/api/2.0/mlflow/runs/update", Some("{}"));
    assert!(e.contains("run_id") && e.contains("JSON body"), "{e}");
    let e = refused("POST", "/api/2.0/mlflow/runs/update", None);
    assert!(e.contains("run_id"), "{e}");
    let e = refused("GET", "/api/2.0/mlflow/runs/get", None);
    assert!(e.contains("run_id") && e.contains("query string"), "{e}");
    let e = refused("GET", "/api/2.0/mlflow/runs/get?other=1", None);
    assert!(e.contains("run_id"), "{e}");
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(r#"{"run_name":"x"}"#),
    );
    assert!(e.contains("experiment_id (or experiment_name)"), "{e}");
    let e = refused(
        "DELETE",
        "/api/2.0/mlflow/registered-models/delete",
        Some("{}"),
    );
    assert!(e.contains("name"), "{e}");
    // Present only where MLflow does not read it: MLflow would not see it either.
    let e = refused("POST", "/api/2.0/mlflow/runs/update?run_id=r1", Some("{}"));
    assert!(e.contains("JSON body"), "{e}");
    assert!(is_lower_case_sentence(&e));
}

#[test]
fn numbers_in_bodies_are_read_as_their_decimal_string() {
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/create",
            Some(r#"{"experiment_id": 1}"#)
        ),
        vec![exp("1", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/search",
            Some(r#"{"experiment_ids": [1, "2"]}"#)
        ),
        vec![exp("1", Read), exp("2", Read)]
    );
    for body in [
        r#"{"experiment_id": 1.0}"#,
        r#"{"experiment_id": true}"#,
        r#"{"experiment_id": {"id": "1"}}"#,
        r#"{"experiment_id": ["1"]}"#,
    ] {
        let e = refused("POST", "/api/2.0/mlflow/runs/create", Some(body));
        assert!(
            e.contains("\"experiment_id\" must be a string"),
            "{body}: {e}"
        );
    }
}

#[test]
fn query_strings_repeat_and_decode_plus_and_escapes() {
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=my+exp%2Fone",
            None
        ),
        vec![Requirement {
            target: Target::ExperimentName {
                name: "my exp/one".into()
            },
            need: Read,
            missing_ok: true,
        }]
    );
    assert_eq!(
        needs(
            "GET",
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id=a&run_id=b&metric_key=m",
            None
        ),
        vec![run("a", Read), run("b", Read)]
    );
    let e = refused("GET", "/api/2.0/mlflow/runs/get?run_id=%G0", None);
    assert!(e.contains("query string"), "{e}");
}

// ---- artifact paths ----------------------------------------------------------------

#[test]
fn artifact_paths_name_their_experiment_after_normalisation() {
    let base = "/api/2.0/mlflow-artifacts/artifacts";
    for path in [
        "1/abc/file.txt",
        "./1/abc",
        "1//abc/./x",
        "%31/x",
        "%2531/x",
        "1%2Fabc",
    ] {
        assert_eq!(
            needs("GET", &format!("{base}/{path}"), None),
            vec![exp("1", Read)],
            "{path}"
        );
    }
    for path in [
        "1/../2/x",
        "../1",
        "1/%2e%2e/2",
        "1/%252e%252e/2",
        "1%2F..%2F2/x",
    ] {
        let e = refused("GET", &format!("{base}/{path}"), None);
        assert!(e.contains("'..'"), "{path}: {e}");
    }
    for path in ["abc/x", "01/x", "workspaces/w/1/x", "-1/x"] {
        let why = admin("GET", &format!("{base}/{path}"), None);
        assert!(why.contains("not an experiment id"), "{path}: {why}");
    }
    let why = admin("PUT", &format!("{base}/"), None);
    assert!(why.contains("artifact root"), "{why}");
}

#[test]
fn artifact_routes_need_read_edit_manage_and_never_read_the_body() {
    let base = "/ajax-api/2.0/mlflow-artifacts";
    for (method, path, need) in [
        ("GET", "artifacts/5/m/model.pkl", Read),
        ("HEAD", "artifacts/5/m/model.pkl", Read),
        ("PUT", "artifacts/5/m/model.pkl", Edit),
        ("DELETE", "artifacts/5/m", Manage),
        ("POST", "mpu/create/5/m/big.bin", Edit),
        ("POST", "mpu/complete/5/m/big.bin", Edit),
        ("POST", "mpu/abort/5/m/big.bin", Edit),
        ("GET", "presigned/5/m/big.bin", Read),
    ] {
        let full = format!("{base}/{path}");
        assert!(!route(method, &full).reads_body(), "{method} {path}");
        assert_eq!(
            needs(method, &full, None),
            vec![exp("5", need)],
            "{method} {path}"
        );
    }
    // The upload's body is the file: never parsed, even when it looks like JSON.
    assert_eq!(
        needs(
            "PUT",
            "/api/2.0/mlflow-artifacts/artifacts/5/a.json",
            Some("{oops")
        ),
        vec![exp("5", Edit)]
    );
}

#[test]
fn the_artifact_root_listing_passes_and_is_filtered() {
    for path in [
        "/api/2.0/mlflow-artifacts/artifacts",
        "/api/2.0/mlflow-artifacts/artifacts?path=",
        "/api/2.0/mlflow-artifacts/artifacts?path=.",
        "/api/2.0/mlflow-artifacts/artifacts?path=%2F",
    ] {
        let plan = ok("GET", path, None);
        assert_eq!(plan.access, Access::Resources(vec![]), "{path}");
        assert_eq!(plan.after, After::Filter(Listing::ArtifactRoot), "{path}");
    }
    // A listing inside an experiment needs READ on it and is not filtered.
    let plan = ok(
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=7/run/artifacts",
        None,
    );
    assert_eq!(plan.access, Access::Resources(vec![exp("7", Read)]));
    assert_eq!(plan.after, After::Nothing);
    // MLflow lists the first `path`, even an empty one: the root, filtered; the
    // others are checked all the same.
    let plan = ok(
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=&path=7",
        None,
    );
    assert_eq!(plan.access, Access::Resources(vec![exp("7", Read)]));
    assert_eq!(plan.after, After::Filter(Listing::ArtifactRoot));
    let plan = ok(
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=7&path=",
        None,
    );
    assert_eq!(plan.after, After::Nothing);
    // Every `path` value is checked.
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow-artifacts/artifacts?path=7/a&path=8/b",
            None
        ),
        vec![exp("7", Read), exp("8", Read)]
    );
    assert!(refused(
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=7/../8",
        None
    )
    .contains("'..'"));
    assert!(admin(
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts?path=workspaces",
        None
    )
    .contains("not an experiment id"));
}

#[test]
fn run_artifact_routes_read_the_run_where_mlflow_reads_it() {
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/artifacts/list?run_id=r1&path=x",
            None
        ),
        vec![run("r1", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-download-url",
            Some(r#"{"run_id":"r1","path":"x"}"#)
        ),
        vec![run("r1", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            Some(r#"{"run_id":"r1","model_id":"m-1","path":"x"}"#)
        ),
        vec![run("r1", Edit), logged("m-1", Edit)]
    );
    let e = refused(
        "POST",
        "/api/2.0/mlflow/artifacts/presigned-upload-url",
        Some(r#"{"path":"x"}"#),
    );
    assert!(e.contains("run_id or model_id"), "{e}");
    // `/get-artifact` reads `run_id` or `run_uuid` from the query string.
    assert_eq!(
        needs("GET", "/get-artifact?run_uuid=r1&path=model/MLmodel", None),
        vec![run("r1", Read)]
    );
    assert!(refused("GET", "/get-artifact?path=x", None).contains("run_id"));
    // `/model-versions/get-artifact`: READ on the model named in the query string.
    assert_eq!(
        needs(
            "GET",
            "/model-versions/get-artifact?name=m&version=1&path=x",
            None
        ),
        vec![model("m", Read)]
    );
}

#[test]
fn the_ui_upload_reads_run_uuid_from_the_query_string_only() {
    let path = "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=r1&run_uuid=r2&path=a.txt";
    assert!(!route("POST", path).reads_body());
    assert_eq!(
        needs("POST", path, None),
        vec![run("r1", Edit), run("r2", Edit)]
    );
    // A body (the file) changes nothing, even one naming another run.
    assert_eq!(
        needs("POST", path, Some(r#"{"run_uuid":"r3"}"#)),
        vec![run("r1", Edit), run("r2", Edit)]
    );
    let e = refused(
        "POST",
        "/ajax-api/2.0/mlflow/upload-artifact?path=a.txt",
        None,
    );
    assert!(e.contains("run_uuid") && e.contains("query string"), "{e}");
}

// ---- experiments -------------------------------------------------------------------

#[test]
fn experiments() {
    let plan = authenticated(
        "POST",
        "/api/2.0/mlflow/experiments/create",
        Some(r#"{"name":"e"}"#),
    );
    assert_eq!(
        plan.after,
        After::ReportCreated {
            kind: ResourceKind::Experiment
        }
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/experiments/delete",
            Some(r#"{"experiment_id":"3"}"#)
        ),
        vec![exp("3", Manage)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/experiments/restore",
            Some(r#"{"experimentId":"3"}"#)
        ),
        vec![exp("3", Manage)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/experiments/update",
            Some(r#"{"experiment_id":"3","new_name":"n"}"#)
        ),
        vec![exp("3", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            Some(r#"{"experiment_name":"e","key":"k","value":"v"}"#)
        ),
        vec![exp_name("e", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/experiments/delete-experiment-tag",
            Some(r#"{"experiment_id":"3","key":"k"}"#)
        ),
        vec![exp("3", Edit)]
    );
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=3",
            None
        ),
        vec![exp("3", Read)]
    );
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=3&experiment_name=e",
            None
        ),
        vec![exp("3", Read), exp_name("e", Read)]
    );
    // GetExperimentByName: an unknown name passes, so that MLflow answers 404.
    let by_name = needs(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=e",
        None,
    );
    assert_eq!(by_name.len(), 1);
    assert!(by_name[0].missing_ok);
    assert_eq!(
        by_name[0].target,
        Target::ExperimentName { name: "e".into() }
    );
    for method in ["GET", "POST"] {
        let plan = ok(method, "/api/2.0/mlflow/experiments/search", None);
        assert_eq!(plan.access, Access::Resources(vec![]));
        assert_eq!(plan.after, After::Filter(Listing::Experiments));
    }
    assert!(route("POST", "/api/2.0/mlflow/experiments/search").reads_body());
    for path in [
        "/ajax-api/2.0/mlflow/experiments/search-datasets",
        "/api/2.0mlflow/experiments/search-datasets",
    ] {
        assert_eq!(
            needs("POST", path, Some(r#"{"experiment_ids":["1","2"]}"#)),
            vec![exp("1", Read), exp("2", Read)]
        );
        assert!(refused("POST", path, Some(r#"{"experiment_ids":[]}"#)).contains("experiment_ids"));
    }
}

// ---- runs, metrics, params, tags -----------------------------------------------------

#[test]
fn runs() {
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/create",
            Some(r#"{"experiment_id":"2"}"#)
        ),
        vec![exp("2", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/ajax-api/2.0/mlflow/runs/create-promptlab-run",
            Some(r#"{"experiment_id":"2"}"#)
        ),
        vec![exp("2", Edit)]
    );
    for (path, need) in [
        ("runs/delete", Manage),
        ("runs/restore", Manage),
        ("runs/update", Edit),
        ("runs/set-tag", Edit),
        ("runs/delete-tag", Edit),
        ("runs/log-parameter", Edit),
        ("runs/log-model", Edit),
    ] {
        assert_eq!(
            needs(
                "POST",
                &format!("/api/2.0/mlflow/{path}"),
                Some(r#"{"run_id":"r1"}"#)
            ),
            vec![run("r1", need)],
            "{path}"
        );
    }
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/metrics/get-history?run_uuid=r1&metric_key=m",
            None
        ),
        vec![run("r1", Read)]
    );
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=a&run_ids=b&metric_key=m",
            None
        ),
        vec![run("a", Read), run("b", Read)]
    );
    assert!(refused(
        "GET",
        "/ajax-api/2.0/mlflow/metrics/get-history-bulk?metric_key=m",
        None
    )
    .contains("run_ids"));
}

#[test]
fn metrics_for_logged_models_need_edit_on_them() {
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            Some(r#"{"run_id":"r1","key":"k","value":1,"model_id":"m-1"}"#)
        ),
        vec![run("r1", Edit), logged("m-1", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            Some(
                r#"{"run_id":"r1","metrics":[{"key":"k","value":1,"modelId":"m-1"},{"key":"j","value":2,"model_id":"m-2","run_id":"r2"}]}"#
            )
        ),
        vec![
            run("r1", Edit),
            logged("m-1", Edit),
            logged("m-2", Edit),
            run("r2", Edit)
        ]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/outputs",
            Some(r#"{"run_id":"r1","models":[{"model_id":"m-1","step":0}]}"#)
        ),
        vec![run("r1", Edit), logged("m-1", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/log-inputs",
            Some(r#"{"run_id":"r1","datasets":[],"models":[{"model_id":"m-1"}]}"#)
        ),
        vec![run("r1", Edit), logged("m-1", Read)]
    );
    let e = refused(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(r#"{"run_id":"r1","metrics":{}}"#),
    );
    assert!(
        e.contains("\"metrics\"") && e.contains("must be a list"),
        "{e}"
    );
}

#[test]
fn searching_runs_needs_read_on_every_experiment_named() {
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/search",
            Some(r#"{"experiment_ids":["1","2"]}"#)
        ),
        vec![exp("1", Read), exp("2", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/search?experimentIds=3",
            Some(r#"{"experimentIds":["1"]}"#)
        ),
        vec![exp("1", Read), exp("3", Read)]
    );
    // No experiment: allowed, MLflow returns nothing.
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/runs/search",
            Some(r#"{"experiment_ids":[]}"#)
        ),
        vec![]
    );
    assert_eq!(needs("POST", "/api/2.0/mlflow/runs/search", None), vec![]);
}

// ---- logged models ------------------------------------------------------------------

#[test]
fn logged_models() {
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/logged-models",
            Some(r#"{"experiment_id":"4","source_run_id":"r1"}"#)
        ),
        vec![exp("4", Edit), run("r1", Read)]
    );
    for (method, path, need) in [
        ("GET", "m-1", Read),
        ("PATCH", "m-1", Edit),
        ("DELETE", "m-1", Manage),
        ("GET", "m-1/artifacts/directories", Read),
        (
            "GET",
            "m-1/artifacts/files?artifact_file_path=MLmodel",
            Read,
        ),
        ("POST", "m-1/params", Edit),
        ("PATCH", "m-1/tags", Edit),
        ("DELETE", "m-1/tags/k", Manage),
    ] {
        assert_eq!(
            needs(
                method,
                &format!("/api/2.0/mlflow/logged-models/{path}"),
                None
            ),
            vec![logged("m-1", need)],
            "{method} {path}"
        );
    }
    let plan = ok(
        "POST",
        "/api/2.0/mlflow/logged-models/search",
        Some(r#"{"experiment_ids":["1"]}"#),
    );
    assert_eq!(plan.access, Access::Resources(vec![]));
    assert_eq!(plan.after, After::Filter(Listing::LoggedModels));
}

// ---- traces ------------------------------------------------------------------------

#[test]
fn traces_v2() {
    assert_eq!(
        needs(
            "GET",
            "/api/2.0/mlflow/traces?experiment_ids=1&experiment_ids=2",
            None
        ),
        vec![exp("1", Read), exp("2", Read)]
    );
    assert!(refused("GET", "/api/2.0/mlflow/traces?max_results=1", None).contains("experiment_ids"));
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/traces",
            Some(r#"{"experiment_id":"1"}"#)
        ),
        vec![exp("1", Edit)]
    );
    assert_eq!(
        needs("PATCH", "/api/2.0/mlflow/traces/tr-1", Some("{}")),
        vec![trace("tr-1", Edit)]
    );
    assert_eq!(
        needs("GET", "/api/2.0/mlflow/traces/tr-1/info", None),
        vec![trace("tr-1", Read)]
    );
    assert_eq!(
        needs("PATCH", "/api/2.0/mlflow/traces/tr-1/tags", None),
        vec![trace("tr-1", Edit)]
    );
    assert_eq!(
        needs("DELETE", "/api/2.0/mlflow/traces/tr-1/tags", None),
        vec![trace("tr-1", Edit)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/traces/delete-traces",
            Some(r#"{"experiment_id":"1","request_ids":["tr-1"]}"#)
        ),
        vec![exp("1", Manage), trace("tr-1", Manage)]
    );
    assert!(refused(
        "POST",
        "/api/2.0/mlflow/traces/delete-traces",
        Some(r#"{"max_traces":1}"#)
    )
    .contains("experiment_id"));
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/traces/link-to-run",
            Some(r#"{"run_id":"r1","trace_ids":["tr-1"]}"#)
        ),
        vec![run("r1", Edit), trace("tr-1", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/2.0/mlflow/traces/link-prompts",
            Some(r#"{"trace_id":"tr-1","prompt_versions":[{"name":"p","version":"1"}]}"#)
        ),
        vec![trace("tr-1", Edit), model("p", Read)]
    );
    for path in [
        "/ajax-api/2.0/mlflow/get-trace-artifact",
        "/ajax-api/3.0/mlflow/get-trace-artifact",
    ] {
        assert_eq!(
            needs("GET", &format!("{path}?request_id=tr-1"), None),
            vec![trace("tr-1", Read)]
        );
        assert!(refused("GET", path, None).contains("request_id"));
    }
}

#[test]
fn traces_v3() {
    assert_eq!(
        needs("GET", "/api/3.0/mlflow/traces/tr-1", None),
        vec![trace("tr-1", Read)]
    );
    assert_eq!(
        needs("GET", "/api/3.0/mlflow/traces/get?trace_id=tr-1", None),
        vec![trace("tr-1", Read)]
    );
    // A static route is preferred, as Werkzeug prefers it; another method falls
    // through to the route with a parameter, as in Werkzeug.
    assert_eq!(
        route("GET", "/api/3.0/mlflow/traces/batchGet").name,
        "BatchGetTraces"
    );
    assert_eq!(
        route("GET", "/api/3.0/mlflow/traces/search").name,
        "GetTraceInfoV3"
    );
    assert_eq!(
        needs(
            "GET",
            "/api/3.0/mlflow/traces/batchGet?trace_ids=a&trace_ids=b",
            None
        ),
        vec![trace("a", Read), trace("b", Read)]
    );
    assert!(refused("GET", "/api/3.0/mlflow/traces/batchGet", None).contains("trace_ids"));
    assert_eq!(
        needs(
            "POST",
            "/api/3.0/mlflow/traces/batchGetInfos",
            Some(r#"{"trace_ids":["a"]}"#)
        ),
        vec![trace("a", Read)]
    );
    assert_eq!(
        needs(
            "POST",
            "/api/3.0/mlflow/traces/search",
            Some(
                r#"{"locations":[{"type":"MLFLOW_EXPERIMENT","mlflow_experiment":{"experiment_id":"1"}},{"mlflowExperiment":{"experimentId":2}}]}"#
            )
        ),
        vec![exp("1", Read), exp("2", Read)]
    );
    let e = refused(
        "POST",
        "/api/3.0/mlflow/traces/search",
        Some(r#"{"locations":[{"type":"INFERENCE_TABLE"}]}"#),
    );
    assert!(e.contains("locations"), "{e}");
    assert!(refused("POST", "/api/3.0/mlflow/traces/search", Some("{}")).contains("experiment_ids"));
    for path in ["metrics", "calculate-filter-correlation"] {
        assert_eq!(
            needs(
                "POST",
                &format!("/api/3.0/mlflow/traces/{path}"),
                Some(r#"{"experiment_ids":["1"]}"#)
            ),
            vec![exp("1", Read)]
        );
    }
    assert_eq!(
        needs(
            "POST",
            "/api/3.0/mlflow/traces/delete-traces",
            Some(r#"{"experiment_id":"1"}"#)
        ),
        vec![exp("1", Manage)]
    );
    for (method, path, need) in [
        ("PATCH", "tags", Edit),
        ("DELETE", "tags", Edit),
        ("POST", "assessments", Edit),
        ("GET", "assessments/a-1", Read),
        ("PATCH", "assessments/a-1", Edit),
        ("DELETE", "assessments/a-1", Edit),
    ] {
        assert_eq!(
            needs(method, &format!("/api/3.0/mlflow/traces/tr-1/{path}"), None),
            vec![trace("tr-1", need)],
            "{method} {path}"
        );
    }
}

#[test]
fn starting_a_v3_trace_needs_edit_where_it_goes_and_manage_on_an_existing_one() {
    let body = r#"{"trace":{"trace_info":{"trace_id":"tr-1","trace_location":{"type":"MLFLOW_EXPERIMENT","mlflow_experiment":{"experiment_id":"3"}}}}}"#;
    let got = needs("POST", "/api/3.0/mlflow/traces", Some(body));
    assert_eq!(
        got,
        vec![
            exp("3", Edit),
            Requirement {
                target: Target::Trace { id: "tr-1".into() },
                need: Manage,
                missing_ok: true
            }
        ]
    );
    let camel =
        r#"{"trace":{"traceInfo":{"traceLocation":{"mlflowExperiment":{"experimentId":"3"}}}}}"#;
    assert_eq!(
        needs("POST", "/api/3.0/mlflow/traces", Some(camel)),
        vec![exp("3", Edit)]
    );
    let e = refused(
        "POST",
        "/api/3.0/mlflow/traces",
        Some(r#"{"trace":{"trace_info":{}}}"#),
    );
    assert!(
        e.contains("trace.trace_info.trace_location.mlflow_experiment.experiment_id"),
        "{e}"
    );
    let e = refused(
        "POST",
        "/api/3.0/mlflow/traces",
        Some(r#"{"trace":{"trace_info":{"trace_id":"a","traceId":"b"}}}"#),
    );
    assert!(e.contains("\"traceId\""), "{e}");
}

// ---- registered models, model versions, prompts -----------------------------------

#[test]
fn registered_models() {
    for (method, path, need) in [
        ("GET", "registered-models/get?name=m", Read),
        ("GET", "registered-models/get-latest-versions?name=m", Read),
        ("PATCH", "registered-models/update", Edit),
        ("POST", "registered-models/get-latest-versions", Read),
        ("POST", "registered-models/set-tag", Edit),
        ("DELETE", "registered-models/delete-tag", Edit),
        ("POST", "registered-models/alias", Edit),
        ("DELETE", "registered-models/alias", Manage),
        ("GET", "registered-models/alias?name=m&alias=a", Read),
        ("GET", "model-versions/get?name=m&version=1", Read),
        (
            "GET",
            "model-versions/get-download-uri?name=m&version=1",
            Read,
        ),
        ("PATCH", "model-versions/update", Edit),
        ("POST", "model-versions/transition-stage", Edit),
        ("DELETE", "model-versions/delete", Manage),
        ("POST", "model-versions/set-tag", Edit),
        ("DELETE", "model-versions/delete-tag", Manage),
    ] {
        let body =
            (method != "GET").then_some(r#"{"name":"m","version":"1","key":"k","alias":"a"}"#);
        assert_eq!(
            needs(method, &format!("/api/2.0/mlflow/{path}"), body),
            vec![model("m", need)],
            "{method} {path}"
        );
    }
    for path in ["registered-models/search", "model-versions/search"] {
        let plan = ok(
            "GET",
            &format!("/api/2.0/mlflow/{path}?filter=name%3D%27m%27"),
            None,
        );
        assert_eq!(plan.access, Access::Resources(vec![]));
    }
    assert_eq!(
        ok("GET", "/api/2.0/mlflow/registered-models/search", None).after,
        After::Filter(Listing::RegisteredModels)
    );
    assert_eq!(
        ok("GET", "/api/2.0/mlflow/model-versions/search", None).after,
        After::Filter(Listing::ModelVersions)
    );
}

#[test]
fn the_prompt_tag_is_set_and_deleted_by_admins_only() {
    for (method, path) in [
        ("POST", "registered-models/set-tag"),
        ("DELETE", "registered-models/delete-tag"),
        ("POST", "model-versions/set-tag"),
        ("DELETE", "model-versions/delete-tag"),
    ] {
        for key in [
            "mlflow.prompt.is_prompt",
            "MLflow.Prompt.IS_PROMPT",
            " mlflow.prompt.is_prompt ",
            "mlflow.prompt. is_prompt",
        ] {
            let body = format!(r#"{{"name":"m","version":"1","key":{key:?},"value":"true"}}"#);
            let why = admin(method, &format!("/api/2.0/mlflow/{path}"), Some(&body));
            assert!(
                why.contains("prompt") && is_lower_case_sentence(&why),
                "{path} {key}: {why}"
            );
        }
        // In the query string too.
        admin(
            method,
            &format!("/api/2.0/mlflow/{path}?key=mlflow.prompt.is_prompt"),
            Some(r#"{"name":"m","key":"k"}"#),
        );
    }
}

#[test]
fn creating_a_registered_model_or_a_prompt_reports_its_kind() {
    let path = "/api/2.0/mlflow/registered-models/create";
    let kind = |body: &str| match ok("POST", path, Some(body)) {
        Plan {
            access: Access::Authenticated,
            after: After::ReportCreated { kind },
            ..
        } => kind,
        other => panic!("{body}: {other:?}"),
    };
    assert_eq!(kind(r#"{"name":"m"}"#), ResourceKind::RegisteredModel);
    assert_eq!(
        kind(r#"{"name":"p","tags":[{"key":"mlflow.prompt.is_prompt","value":"true"}]}"#),
        ResourceKind::Prompt
    );
    // MLflow compares the value case-insensitively; the last one wins.
    assert_eq!(
        kind(r#"{"name":"p","tags":[{"key":"mlflow.prompt.is_prompt","value":"TRUE"}]}"#),
        ResourceKind::Prompt
    );
    assert_eq!(
        kind(
            r#"{"name":"p","tags":[{"key":"mlflow.prompt.is_prompt","value":"true"},{"key":"mlflow.prompt.is_prompt","value":"false"}]}"#
        ),
        ResourceKind::RegisteredModel
    );
    assert_eq!(
        kind(
            r#"{"name":"m","tags":[{"key":"mlflow.prompt.is_prompt","value":"false"},{"key":"other","value":"true"}]}"#
        ),
        ResourceKind::RegisteredModel
    );
    // A key that reads like the prompt tag but is not it.
    let why = admin(
        "POST",
        path,
        Some(r#"{"name":"p","tags":[{"key":"MLflow.prompt.is_prompt","value":"true"}]}"#),
    );
    assert!(why.contains("looks like"), "{why}");
    let e = refused(
        "POST",
        path,
        Some(r#"{"name":"p","tags":{"mlflow.prompt.is_prompt":"true"}}"#),
    );
    assert!(
        e.contains("\"tags\"") && e.contains("must be a list"),
        "{e}"
    );
}

#[test]
fn renaming_and_deleting_a_registered_model_are_reported() {
    let plan = ok(
        "POST",
        "/api/2.0/mlflow/registered-models/rename",
        Some(r#"{"name":"old","new_name":"new"}"#),
    );
    assert_eq!(plan.access, Access::Resources(vec![model("old", Edit)]));
    assert_eq!(
        plan.after,
        After::Report(ResourceEvent::Renamed {
            kind: ResourceKind::RegisteredModel,
            from: "old".into(),
            to: "new".into()
        })
    );
    assert!(refused(
        "POST",
        "/api/2.0/mlflow/registered-models/rename",
        Some(r#"{"name":"old"}"#)
    )
    .contains("new_name"));
    let plan = ok(
        "DELETE",
        "/api/2.0/mlflow/registered-models/delete",
        Some(r#"{"name":"m"}"#),
    );
    assert_eq!(plan.access, Access::Resources(vec![model("m", Manage)]));
    assert_eq!(
        plan.after,
        After::Report(ResourceEvent::Deleted {
            kind: ResourceKind::RegisteredModel,
            id: "m".into()
        })
    );
}

#[test]
fn creating_a_model_version_needs_read_on_where_it_comes_from() {
    let path = "/api/2.0/mlflow/model-versions/create";
    let body = |json: &str| needs("POST", path, Some(json));
    assert_eq!(
        body(r#"{"name":"m","source":"runs:/r1/model","run_id":"r1"}"#),
        vec![model("m", Edit), run("r1", Read)]
    );
    assert_eq!(
        body(r#"{"name":"m","source":"models:/m-1","model_id":"m-1"}"#),
        vec![model("m", Edit), logged("m-1", Read)]
    );
    assert_eq!(
        body(r#"{"name":"m","source":"models:/other/3"}"#),
        vec![model("m", Edit), model("other", Read)]
    );
    assert_eq!(
        body(r#"{"name":"m","source":"mlflow-artifacts:/5/r1/artifacts/model","run_id":"r1"}"#),
        vec![model("m", Edit), run("r1", Read), exp("5", Read)]
    );
    assert_eq!(
        body(r#"{"name":"m","source":"runs:/r2/model","run_id":"r1","model_id":"m-1"}"#),
        vec![
            model("m", Edit),
            run("r1", Read),
            logged("m-1", Read),
            run("r2", Read)
        ]
    );
    // A prompt version uses MLflow's placeholder source.
    assert_eq!(
        body(
            r#"{"name":"p","source":"dummy-source","tags":[{"key":"mlflow.prompt.is_prompt","value":"true"},{"key":"mlflow.prompt.text","value":"hi"}]}"#
        ),
        vec![model("p", Edit)]
    );
    // Sources the filter cannot trace: admins only.
    for source in [
        "s3://bucket/5/r1/artifacts/model",
        "/tmp/model",
        "file:///tmp/m",
        "dummy-source",
        "models:/a/b/c",
    ] {
        let json = format!(r#"{{"name":"m","source":{source:?},"run_id":"r1"}}"#);
        let why = admin("POST", path, Some(&json));
        assert!(why.contains(source) && why.contains("admins only"), "{why}");
    }
    let why = admin(
        "POST",
        path,
        Some(
            r#"{"name":"m","source":"runs:/r1/m","tags":[{"key":"Mlflow.prompt.is_prompt","value":"true"}]}"#,
        ),
    );
    assert!(why.contains("looks like"), "{why}");
    assert!(refused("POST", path, Some(r#"{"name":"m"}"#)).contains("source"));
    assert!(refused(
        "POST",
        path,
        Some(r#"{"name":"m","source":"mlflow-artifacts:/5/../6/x"}"#)
    )
    .contains("'..'"));
}

// ---- out of scope, open, and the policy service -----------------------------------

#[test]
fn other_mlflow_families_are_open_to_admins_only() {
    for (method, path, word) in [
        ("GET", "/api/2.0/mlflow/webhooks", "webhook"),
        ("POST", "/api/2.0/mlflow/webhooks/w1/test", "webhook"),
        (
            "GET",
            "/api/3.0/mlflow/scorers/list?experiment_id=1",
            "scorer",
        ),
        ("POST", "/ajax-api/3.0/mlflow/scorer/invoke", "scorer"),
        ("GET", "/api/3.0/mlflow/gateway/endpoints/list", "gateway"),
        ("POST", "/ajax-api/2.0/mlflow/gateway-proxy", "gateway"),
        ("POST", "/gateway/openai/v1/chat/completions", "gateway"),
        ("GET", "/gateway/mlflow/v1/models", "gateway"),
        ("GET", "/api/3.0/mlflow/workspaces", "workspace"),
        ("GET", "/api/3.0/mlflow/mcp-servers/a/b/versions", "mcp"),
        ("GET", "/api/3.0/mlflow/datasets/d1", "dataset"),
        ("POST", "/ajax-api/3.0/mlflow/demo/generate", "demo"),
        ("GET", "/ajax-api/3.0/mlflow/jobs/j1", "job"),
        ("POST", "/ajax-api/3.0/jobs/", "job"),
        ("POST", "/ajax-api/3.0/jobs/search", "job"),
        (
            "POST",
            "/api/3.0/mlflow/review-queues/create",
            "review queue",
        ),
        ("GET", "/api/3.0/mlflow/label-schemas/list", "label schema"),
        (
            "POST",
            "/api/3.0/mlflow/prompt-optimization/jobs",
            "prompt optimization",
        ),
        ("POST", "/api/3.0/mlflow/issues/search", "issue"),
        (
            "POST",
            "/ajax-api/3.0/mlflow/genai/evaluate/invoke",
            "genai",
        ),
        (
            "POST",
            "/ajax-api/3.0/mlflow/assistant/message",
            "assistant",
        ),
        ("GET", "/api/3.0/mlflow/gateway/budgets/list", "gateway"),
        ("POST", "/v1/traces", "otlp"),
    ] {
        let routed = route(method, path);
        assert_eq!(routed.class(), RouteClass::AdminOnly, "{path}");
        assert!(!routed.reads_body(), "{path}");
        let why = admin(method, path, None);
        assert!(
            why.contains(word) && why.contains("admins only"),
            "{path}: {why}"
        );
        assert!(is_lower_case_sentence(&why), "{why}");
        assert!(!why.contains("Access") && !why.contains("Spec"), "{why}");
    }
}

#[test]
fn the_ui_shell_and_server_basics_need_a_sign_in_only() {
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/static-files/lib/app.js"),
        ("GET", "/static-files/"),
        ("GET", "/build/index.html"),
        ("GET", "/version"),
        ("GET", "/health"),
        ("HEAD", "/health"),
        ("GET", "/api/3.0/mlflow/server-info"),
        ("GET", "/ajax-api/3.0/mlflow/server-info"),
        ("GET", "/ajax-api/3.0/mlflow/ui-telemetry"),
        ("POST", "/ajax-api/3.0/mlflow/ui-telemetry"),
        ("GET", "/api/2.0/mlflow/unified-traces"),
        ("GET", "/api/2.0/mlflow/get-online-trace-details"),
    ] {
        let plan = authenticated(method, path, None);
        assert_eq!(plan.after, After::Nothing);
        assert_eq!(route(method, path).class(), RouteClass::Authenticated);
    }
}

#[test]
fn the_policy_service_api_checks_its_callers_itself() {
    for (method, path) in [
        ("GET", "/api/2.0/mlflow/users"),
        ("GET", "/api/2.0/mlflow/users/current"),
        ("POST", "/api/2.0/mlflow/users/current/tokens"),
        ("DELETE", "/ajax-api/2.0/mlflow/users/bob/tokens/t1"),
        ("GET", "/api/2.0/mlflow/permissions/users/bob/experiments/1"),
        (
            "POST",
            "/ajax-api/2.0/mlflow/permissions/groups/g/registered-models/m",
        ),
        ("GET", "/api/3.0/mlflow/permissions/users/bob/mcp-servers/x"),
        ("GET", "/ajax-api/3.0/mlflow/permissions/anything"),
    ] {
        authenticated(method, path, None);
        assert!(!route(method, path).reads_body());
    }
}

#[test]
fn routes_that_read_ids_from_the_body_say_so() {
    for (method, path) in [
        ("POST", "/api/2.0/mlflow/runs/update"),
        ("GET", "/api/2.0/mlflow/runs/get"),
        ("POST", "/api/2.0/mlflow/registered-models/create"),
        ("POST", "/api/2.0/mlflow/model-versions/create"),
        ("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run"),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete"),
    ] {
        assert!(route(method, path).reads_body(), "{method} {path}");
    }
    for (method, path) in [
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
        ("GET", "/get-artifact"),
        ("POST", "/api/2.0/mlflow/experiments/create"),
        ("GET", "/"),
    ] {
        assert!(!route(method, path).reads_body(), "{method} {path}");
    }
}

// ---- created_event -----------------------------------------------------------------

#[test]
fn created_events_read_the_new_resource_from_mlflow_answer() {
    assert_eq!(
        created_event(
            ResourceKind::Experiment,
            "alice",
            br#"{"experiment_id": "12"}"#
        ),
        Ok(ResourceEvent::Created {
            kind: ResourceKind::Experiment,
            id: "12".into(),
            creator: "alice".into()
        })
    );
    assert_eq!(
        created_event(
            ResourceKind::Experiment,
            "alice",
            br#"{"experiment_id": 12}"#
        ),
        Ok(ResourceEvent::Created {
            kind: ResourceKind::Experiment,
            id: "12".into(),
            creator: "alice".into()
        })
    );
    let answer = br#"{"registered_model": {"name": "m", "creation_timestamp": 1}}"#;
    for kind in [ResourceKind::RegisteredModel, ResourceKind::Prompt] {
        assert_eq!(
            created_event(kind, "bob", answer),
            Ok(ResourceEvent::Created {
                kind,
                id: "m".into(),
                creator: "bob".into()
            })
        );
    }
    let e = created_event(ResourceKind::Experiment, "alice", b"{}").unwrap_err();
    assert!(e.contains("experiment_id") && e.contains("alice"), "{e}");
    let e = created_event(
        ResourceKind::Prompt,
        "alice",
        br#"{"registered_model": {}}"#,
    )
    .unwrap_err();
    assert!(e.contains("registered_model.name"), "{e}");
    let e = created_event(ResourceKind::Experiment, "alice", b"<html>").unwrap_err();
    assert!(e.contains("not JSON"), "{e}");
    let e = created_event(
        ResourceKind::Experiment,
        "alice",
        br#"{"experiment_id": ""}"#,
    )
    .unwrap_err();
    assert!(e.contains("experiment_id"), "{e}");
}

#[test]
fn every_rule_has_a_name_and_a_lower_case_reason() {
    for rule in table::RULES {
        assert!(!rule.name.is_empty());
        if let Spec::Admin(why) = rule.spec {
            assert!(is_lower_case_sentence(why), "{why}");
        }
        // Only the last pattern part may take the rest of the path.
        let parts: Vec<&str> = rule.pattern.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            assert!(!part.starts_with("{*"), "{}", rule.pattern);
        }
    }
    for family in table::FAMILIES {
        if let FamilyAccess::Admin(why) = family.access {
            assert!(is_lower_case_sentence(why), "{why}");
        }
    }
}
