"""MLflow's GraphQL endpoint through Envoy, as MLflow's UI asks it: a user who may read
experiment A (and a run in it) and one registered model gets A's run, experiment, runs and
metric histories, and nothing of experiment B; a run's model versions of a registered
model the user may not read are dropped from `modelVersions`."""
from __future__ import annotations

import json
import time
import urllib.parse as up
import uuid

import pytest

from helpers import API, TIMEOUT, grant, login, marker, new_idp_user
from local_stack import USER_GROUP

# The UI's four queries (MLflow 3.17.2's bundle), as Apollo sends them.
GET_RUN = """query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
    mlflowGetRun(input: $data) {
      apiError { helpUrl code message }
      run {
        info { runName status runUuid experimentId artifactUri endTime lifecycleStage startTime userId }
        experiment { experimentId name tags { key value } artifactLocation lifecycleStage lastUpdateTime }
        modelVersions { status version name source }
        data { metrics { key value step timestamp } params { key value } tags { key value } }
        inputs {
          datasetInputs { dataset { digest name profile schema source sourceType } tags { key value } }
          modelInputs { modelId }
        }
        outputs { modelOutputs { modelId step } }
      }
    }
  }"""

METRIC_HISTORY = """query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!)
  @component(name: "MLflow.ExperimentRunTracking") {
    mlflowGetMetricHistoryBulkInterval(input: $data) {
      __typename
      metrics { timestamp step runId key value }
      apiError { code message }
    }
  }"""

GET_EXPERIMENT = """query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) @component(name: "MLflow.ExperimentRunTracking") {
    mlflowGetExperiment(input: $input) {
      apiError { code message }
      experiment {
        artifactLocation creationTime effectiveTraceArchivalRetention experimentId
        lastUpdateTime lifecycleStage name tags { key value }
      }
    }
  }"""

SEARCH_RUNS = """query SearchRuns($data: MlflowSearchRunsInput!) {
    mlflowSearchRuns(input: $data) {
      apiError { helpUrl code message }
      runs {
        info { runName status runUuid experimentId artifactUri endTime lifecycleStage startTime userId }
        experiment { experimentId name tags { key value } artifactLocation lifecycleStage lastUpdateTime }
        data { metrics { key value step timestamp } params { key value } tags { key value } }
        inputs {
          datasetInputs { dataset { digest name profile schema source sourceType } tags { key value } }
          modelInputs { modelId }
        }
        outputs { modelOutputs { modelId step } }
        modelVersions { version name creationTimestamp status source }
      }
    }
  }"""


def post(stack, browser, body: dict, mark: str | None = None):
    # The marker rides in a query parameter: MLflow's GraphQL handler reads only the body.
    suffix = f"?probe={mark}" if mark else ""
    return browser.post(f"{stack.url}/graphql{suffix}", json=body, headers=API, timeout=TIMEOUT)


def answer(r) -> dict:
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}"
    body = r.json()
    assert not body.get("errors"), body
    return body["data"]


def refused(stack, access_log, browser, body: dict, expect: int = 403):
    mark = marker()
    r = post(stack, browser, body, mark)
    assert r.status_code == expect, f"{r.status_code} {r.text[:500]}"
    access_log.assert_mlflow_never_saw(mark)
    return r


@pytest.fixture(scope="module")
def world(stack):
    """Experiments A and B with a run each, made by their owner; two registered models
    with a version linked to A's run; a user who may read A and the first model only."""
    admin = login(stack, "admin")
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "gql-owner"))

    def call(method: str, path: str, **kwargs) -> dict:
        r = owner.request(method, f"{stack.url}{path}", headers=API, timeout=TIMEOUT, **kwargs)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:300]}"
        return r.json()

    tag = uuid.uuid4().hex[:8]
    ids: dict = {}
    for which in "AB":
        ids[which] = call("POST", "/api/2.0/mlflow/experiments/create",
                          json={"name": f"graphql-{which}-{tag}"})["experiment_id"]
        run = call("POST", "/api/2.0/mlflow/runs/create",
                   json={"experiment_id": ids[which], "run_name": f"run-{which}"})["run"]["info"]
        ids[f"run_{which}"] = run["run_id"]
        ids[f"uri_{which}"] = run["artifact_uri"]
        call("POST", "/api/2.0/mlflow/runs/log-metric",
             json={"run_id": run["run_id"], "key": "loss", "value": 0.5,
                   "timestamp": int(time.time() * 1000), "step": 1})
    models = {"readable": f"graphql-readable-{tag}", "hidden": f"graphql-hidden-{tag}"}
    for name in models.values():
        call("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
        call("POST", "/api/2.0/mlflow/model-versions/create",
             json={"name": name, "source": ids["uri_A"] + "/model", "run_id": ids["run_A"]})

    sub = new_idp_user(stack, [USER_GROUP], "gql-reader")
    grant(stack, admin, f"{sub}@example.com", ids["A"], "READ")
    grant(stack, admin, f"{sub}@example.com", models["readable"], "READ", kind="registered-models")
    return {**ids, "models": models, "user": login(stack, sub), "admin": admin}


def version_names(run: dict) -> list[str]:
    return sorted(v["name"] for v in run.get("modelVersions") or [])


def test_the_ui_get_run_answers_for_a_run_of_a_without_unreadable_model_versions(stack, world):
    body = {"operationName": "GetRun", "query": GET_RUN, "variables": {"data": {"runId": world["run_A"]}}}
    # The admin sees the run linked to both models' versions (admins are not filtered).
    run = answer(post(stack, world["admin"], body))["mlflowGetRun"]["run"]
    assert version_names(run) == sorted(world["models"].values())

    got = answer(post(stack, world["user"], body))["mlflowGetRun"]
    assert got["apiError"] is None
    run = got["run"]
    assert run["info"]["runUuid"] == world["run_A"]
    assert run["experiment"]["experimentId"] == world["A"]
    assert [m["key"] for m in run["data"]["metrics"]] == ["loss"]
    assert version_names(run) == [world["models"]["readable"]]


def test_the_ui_get_experiment_answers_for_a_only(stack, access_log, world):
    body = {"operationName": "MlflowGetExperimentQuery", "query": GET_EXPERIMENT,
            "variables": {"input": {"experimentId": world["A"]}}}
    experiment = answer(post(stack, world["user"], body))["mlflowGetExperiment"]["experiment"]
    assert experiment["experimentId"] == world["A"]
    body["variables"] = {"input": {"experimentId": world["B"]}}
    r = refused(stack, access_log, world["user"], body)
    assert r.json()["error_code"] == "PERMISSION_DENIED"
    assert world["B"] in r.json()["message"]


def test_the_ui_search_runs_answers_for_a_without_unreadable_model_versions(stack, access_log, world):
    body = {"operationName": "SearchRuns", "query": SEARCH_RUNS,
            "variables": {"data": {"experimentIds": [world["A"]], "filter": ""}}}
    runs = answer(post(stack, world["user"], body))["mlflowSearchRuns"]["runs"]
    assert [r["info"]["runUuid"] for r in runs] == [world["run_A"]]
    assert version_names(runs[0]) == [world["models"]["readable"]]
    # B among the experiments, or no experiment at all: refused.
    body["variables"] = {"data": {"experimentIds": [world["A"], world["B"]]}}
    refused(stack, access_log, world["user"], body)
    body["variables"] = {"data": {"experimentIds": []}}
    refused(stack, access_log, world["user"], body)


def test_the_ui_metric_history_answers_for_runs_of_a_only(stack, access_log, world):
    body = {"operationName": "GetMetricHistoryBulkInterval", "query": METRIC_HISTORY,
            "variables": {"data": {"runIds": [world["run_A"]], "metricKey": "loss", "maxResults": 320}}}
    metrics = answer(post(stack, world["user"], body))["mlflowGetMetricHistoryBulkInterval"]["metrics"]
    assert [(m["runId"], m["key"], m["value"]) for m in metrics] == [(world["run_A"], "loss", 0.5)]
    body["variables"]["data"]["runIds"] = [world["run_A"], world["run_B"]]
    refused(stack, access_log, world["user"], body)


def test_a_run_of_b_is_refused_however_it_is_asked(stack, access_log, world):
    user, run_b = world["user"], world["run_B"]
    r = refused(stack, access_log, user, {"query": GET_RUN, "variables": {"data": {"runId": run_b}}})
    assert r.json()["error_code"] == "PERMISSION_DENIED"
    # The deprecated spelling beside a readable run, an inline literal, an alias.
    refused(stack, access_log, user,
            {"query": GET_RUN, "variables": {"data": {"runId": world["run_A"], "runUuid": run_b}}})
    refused(stack, access_log, user,
            {"query": f'{{ mine: mlflowGetRun(input: {{runId: "{world["run_A"]}"}}) {{ run {{ info {{ runUuid }} }} }}'
                      f' theirs: mlflowGetRun(input: {{runId: "{run_b}"}}) {{ run {{ info {{ runUuid }} }} }} }}'})
    # Hidden in a fragment spread at the root.
    document = """query GetRun($data: MlflowGetRunInput!) {
        mlflowGetRun(input: $data) { run { info { runUuid } } }
        ...Theirs
      }
      fragment Theirs on Query { other: mlflowGetRun(input: {runId: "%s"}) { run { info { runUuid } } } }""" % run_b
    refused(stack, access_log, user, {"query": document, "variables": {"data": {"runId": world["run_A"]}}})
    # Its artifacts too.
    refused(stack, access_log, user,
            {"query": f'{{ mlflowListArtifacts(input: {{runId: "{run_b}"}}) {{ files {{ path }} }} }}'})


def test_what_the_ui_does_not_ask_is_for_admins(stack, access_log, world):
    for document in [
        "{ __schema { queryType { name } } }",
        'mutation { mlflowSearchRuns(input: {experimentIds: ["%s"]}) { runs { info { runUuid } } } }' % world["A"],
        '{ mlflowSearchModelVersions(input: {filter: "name=\'%s\'"}) { modelVersions { name } } }'
        % world["models"]["hidden"],
        '{ mlflowGetRun(input: {runId: "%s"}) { run { mv: modelVersions { name } } } }' % world["run_A"],
    ]:
        r = refused(stack, access_log, world["user"], {"query": document})
        assert "admins only" in r.json()["message"], r.text
        # An admin passes.
        assert post(stack, world["admin"], {"query": document}).status_code == 200


def test_malformed_queries_are_refused_before_mlflow(stack, access_log, world):
    for document, needle in [
        ('{ mlflowGetRun(input: {runId: "%s}) { run { info { runUuid } } } }' % world["run_A"], "unterminated string"),
        ("{ mlflowGetRun(input: $data) { run { info { runUuid } } }", "expected"),
        ("{ a " * 100 + "}" * 100, "deeper than"),
    ]:
        r = refused(stack, access_log, world["user"], {"query": document}, expect=400)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert needle in r.json()["message"], r.text
    r = refused(stack, access_log, world["user"], {"query": GET_RUN, "variables": {}}, expect=400)
    assert "$data" in r.json()["message"], r.text


def test_a_get_is_read_from_its_body_like_mlflow_and_else_from_its_query_string(stack, access_log, world):
    user = world["user"]
    body = {"query": GET_EXPERIMENT, "variables": {"input": {"experimentId": world["A"]}}}
    # MLflow reads a GET's JSON body.
    r = user.request("GET", f"{stack.url}/graphql", data=json.dumps(body),
                     headers={**API, "Content-Type": "application/json"}, timeout=TIMEOUT)
    assert answer(r)["mlflowGetExperiment"]["experiment"]["experimentId"] == world["A"]
    mark = marker()
    body["variables"] = {"input": {"experimentId": world["B"]}}
    r = user.request("GET", f"{stack.url}/graphql?probe={mark}", data=json.dumps(body),
                     headers={**API, "Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 403, r.text[:300]
    access_log.assert_mlflow_never_saw(mark)
    # The query-string form is checked too (MLflow itself does not read it).
    mark = marker()
    query = up.urlencode({"query": GET_EXPERIMENT, "probe": mark,
                          "variables": json.dumps({"input": {"experimentId": world["B"]}})})
    r = user.get(f"{stack.url}/graphql?{query}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 403, r.text[:300]
    access_log.assert_mlflow_never_saw(mark)
    # Both a body and a query string: refused, MLflow would run the body's.
    mark = marker()
    body["variables"] = {"input": {"experimentId": world["A"]}}
    r = user.request("GET", f"{stack.url}/graphql?query=%7B__typename%7D&probe={mark}",
                     data=json.dumps(body), headers={**API, "Content-Type": "application/json"},
                     timeout=TIMEOUT)
    assert r.status_code == 400, r.text[:300]
    assert "query string" in r.json()["message"], r.text
    access_log.assert_mlflow_never_saw(mark)
