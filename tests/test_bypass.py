"""Ways around a permission check that the system we replace had to close, each tried
against the filter by a user who may read and edit experiment A but nothing of B. Every
one is refused by Envoy itself: MLflow never sees the request."""
from __future__ import annotations

import uuid

import pytest
import requests

from helpers import API, TIMEOUT, grant, login, marker, new_idp_user
from local_stack import USER_GROUP


@pytest.fixture(scope="module")
def setting(stack):
    admin = login(stack, "admin")
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    ids = {}
    for which in "AB":
        r = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create",
                       json={"name": f"bypass-{which}-{uuid.uuid4().hex[:8]}"}, headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        ids[which] = r.json()["experiment_id"]
    run_b = owner.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": ids["B"]},
                       headers=API, timeout=TIMEOUT).json()["run"]["info"]["run_id"]
    sub = new_idp_user(stack, [USER_GROUP], "intruder")
    grant(stack, admin, f"{sub}@example.com", ids["A"], "EDIT")
    return {"user": login(stack, sub), "A": ids["A"], "B": ids["B"], "run_b": run_b}


def refused(stack, access_log, setting, method, path, *, expect=(403,), **kwargs):
    mark = marker()
    sep = "&" if "?" in path else "?"
    # The marker rides in a query parameter MLflow ignores.
    url = f"{stack.url}{path}{sep}probe={mark}"
    r = setting["user"].request(method, url, headers={**API, **kwargs.pop("headers", {})}, timeout=TIMEOUT,
                                **kwargs)
    assert r.status_code in expect, f"{method} {path}: {r.status_code} {r.text[:300]}"
    access_log.assert_mlflow_never_saw(mark)
    return r


def test_the_user_may_use_a_and_not_b(stack, setting):
    user = setting["user"]
    get = f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id="
    assert user.get(get + setting["A"], headers=API, timeout=TIMEOUT).status_code == 200
    assert user.get(get + setting["B"], headers=API, timeout=TIMEOUT).status_code == 403


def test_ajax_api_twin_is_checked_like_api(stack, access_log, setting):
    refused(stack, access_log, setting, "POST", "/ajax-api/2.0/mlflow/runs/create",
            json={"experiment_id": setting["B"]})
    refused(stack, access_log, setting, "GET", f"/ajax-api/2.0/mlflow/runs/get?run_id={setting['run_b']}")


def test_head_is_checked_like_get(stack, access_log, setting):
    refused(stack, access_log, setting, "HEAD", f"/api/2.0/mlflow/experiments/get?experiment_id={setting['B']}")


def test_both_spellings_of_a_field_in_one_body_are_refused(stack, access_log, setting):
    r = refused(stack, access_log, setting, "POST", "/api/2.0/mlflow/runs/create", expect=(400,),
                json={"experiment_id": setting["A"], "experimentId": setting["B"]})
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_a_query_value_that_differs_from_the_body_is_checked_too(stack, access_log, setting):
    refused(stack, access_log, setting, "POST", f"/api/2.0/mlflow/runs/create?experiment_id={setting['B']}",
            expect=(400, 403), json={"experiment_id": setting["A"]})


def test_a_get_with_a_json_body_is_refused(stack, access_log, setting):
    refused(stack, access_log, setting, "GET", "/api/2.0/mlflow/experiments/get", expect=(400,),
            json={"experiment_id": setting["B"]})


@pytest.mark.parametrize("artifact_path", [
    "{B}/x.txt",
    "%3{b_last}/x.txt",        # placeholder: the id's last digit percent-encoded (see below)
    "{A}/../{B}/x.txt",
    "{A}/%2e%2e/{B}/x.txt",
    "./{B}/x.txt",
    "/{B}/x.txt",
])
def test_encoded_and_dotted_artifact_paths_are_refused(stack, access_log, setting, artifact_path):
    b = setting["B"]
    # "%3N" is the percent-encoding of the digit N: spell B's last digit that way.
    path = artifact_path.replace("%3{b_last}", f"{b[:-1]}%3{b[-1]}").format(A=setting["A"], B=b)
    refused(stack, access_log, setting, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}", expect=(400, 403))


def test_routes_the_filter_does_not_know_are_for_admins_only(stack, access_log, setting):
    refused(stack, access_log, setting, "GET", "/api/2.0/mlflow/not-a-route")
    refused(stack, access_log, setting, "GET", "/api/2.0/mlflow/webhooks")
    # GraphQL beyond the UI's queries (introspection here): admins only.
    refused(stack, access_log, setting, "POST", "/graphql", json={"query": "{ __schema { types { name } } }"})


def test_multipart_upload_routes_are_checked(stack, access_log, setting):
    b = setting["B"]
    for route in ("mpu/create", "mpu/complete", "mpu/abort"):
        refused(stack, access_log, setting, "POST", f"/api/2.0/mlflow-artifacts/{route}/{b}/x.bin", json={})
    refused(stack, access_log, setting, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{b}/x.bin", data=b"payload")


def test_an_unknown_run_is_a_denial(stack, access_log, setting):
    refused(stack, access_log, setting, "GET", f"/api/2.0/mlflow/runs/get?run_id={uuid.uuid4().hex}")


def test_anonymous_requests_never_reach_mlflow(stack, access_log):
    mark = marker()
    r = requests.get(f"{stack.url}/api/2.0/mlflow/experiments/search?probe={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 401
    access_log.assert_mlflow_never_saw(mark)


def test_a_body_larger_than_the_filter_reads_is_refused(stack, access_log, setting):
    # A JSON body the filter must read for ids, past its max_body_bytes (4 MiB).
    padding = "x" * (5 * 1024 * 1024)
    r = refused(stack, access_log, setting, "POST", "/api/2.0/mlflow/runs/create", expect=(413,),
                data=f'{{"experiment_id": "{setting["A"]}", "run_name": "{padding}"}}',
                headers={"Content-Type": "application/json"})
    assert "larger than" in r.json()["message"], r.text[:300]
