"""Per-resource permissions through Envoy, with the real MLflow Python client: who may do
what on an experiment E and a registered model M, as the system we replace decides it."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from helpers import (API, TIMEOUT, access_token, client_env, grant, login, new_idp_user,
                     pattern_grant, revoke, run_client_script, service_settings)
from local_stack import USER_GROUP

SETUP = r"""
import json, sys
from mlflow import MlflowClient
c = MlflowClient()
name, victims = sys.argv[1], int(sys.argv[2])
exp = c.create_experiment(name)
run = c.create_run(exp).info
c.log_text(run.run_id, "seed", "seed.txt")
victim_runs = [c.create_run(exp).info.run_id for _ in range(victims)]
model = c.create_registered_model(name + "-model").name
c.create_model_version(model, run.artifact_uri + "/model", run_id=run.run_id)
print(json.dumps({"experiment": exp, "run": run.run_id, "source": run.artifact_uri + "/model",
                  "victims": victim_runs, "model": model}))
"""

# Every route family, as one principal; prints {family: "allowed" | "denied" | "error ..."}.
FAMILIES = r"""
import json, sys, tempfile
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
c = MlflowClient()
exp, run, victim, model, source, tag = sys.argv[1:7]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except MlflowException as e:
        out[name] = "denied" if e.error_code == "PERMISSION_DENIED" else f"error {e.error_code}: {e.message[:300]}"
    except Exception as e:  # the artifact repository raises the HTTP error itself
        text = str(e)
        out[name] = "denied" if "403" in text else f"error {type(e).__name__}: {text[:300]}"
attempt("get experiment", lambda: c.get_experiment(exp))
out["experiment in search"] = ("allowed" if any(e.experiment_id == exp for e in c.search_experiments(max_results=1000))
                               else "denied")
attempt("create run", lambda: c.create_run(exp))
attempt("log metric", lambda: c.log_metric(run, "m", 1.0))
attempt("upload artifact", lambda: c.log_text(run, "hello", f"upload-{tag}.txt"))
attempt("download artifact", lambda: c.download_artifacts(run, "seed.txt", tempfile.mkdtemp()))
attempt("delete run", lambda: c.delete_run(victim))
attempt("get model", lambda: c.get_registered_model(model))
attempt("register version", lambda: c.create_model_version(model, source, run_id=run))
attempt("set alias", lambda: c.set_registered_model_alias(model, f"a{tag}", "1"))
def rename():
    c.rename_registered_model(model, model + "-moved")
    c.rename_registered_model(model + "-moved", model)
attempt("rename model", rename)
print(json.dumps(out))
"""

FAMILY_NEEDS = {
    "get experiment": "READ", "experiment in search": "READ", "create run": "EDIT",
    "log metric": "EDIT", "upload artifact": "EDIT", "download artifact": "READ",
    "delete run": "MANAGE", "get model": "READ", "register version": "EDIT",
    "set alias": "EDIT", "rename model": "EDIT",
}
RANK = {"READ": 1, "EDIT": 3, "MANAGE": 4}


def expected(level: str | None) -> dict:
    """What a principal holding `level` on both E and M may do (None: nothing)."""
    return {family: ("allowed" if level and RANK[level] >= RANK[need] else "denied")
            for family, need in FAMILY_NEEDS.items()}


PRINCIPALS = ["reader", "editor", "manager", "denied", "default only", "admin", "group member"]
HOLDS = {"reader": "READ", "editor": "EDIT", "manager": "MANAGE", "denied": None,
         "default only": None, "admin": "MANAGE", "group member": "EDIT"}


@pytest.fixture(scope="module")
def admin(stack):
    return login(stack, "admin")


@pytest.fixture(scope="module")
def world(stack, admin):
    """E and M made by their owner; one user per principal of the matrix, with its grants."""
    team = f"team-{uuid.uuid4().hex[:6]}"
    owner = new_idp_user(stack, [USER_GROUP], "owner")
    owner_browser = login(stack, owner)
    owner_env = client_env(f"{owner}@example.com", access_token(stack, owner_browser))
    made = run_client_script(stack, owner_env, SETUP, f"matrix-{uuid.uuid4().hex[:8]}", str(len(PRINCIPALS)))
    people = {}
    for i, principal in enumerate(PRINCIPALS):
        if principal == "admin":
            browser, username = admin, "admin@example.com"
        else:
            groups = [USER_GROUP] + ([team] if principal in ("group member", "denied") else [])
            sub = new_idp_user(stack, groups, principal.replace(" ", "-"))
            browser, username = login(stack, sub), f"{sub}@example.com"
        people[principal] = {"env": client_env(username, access_token(stack, browser)),
                             "username": username, "victim": made["victims"][i]}
    for principal, level in [("reader", "READ"), ("editor", "EDIT"), ("manager", "MANAGE"),
                             ("denied", "NO_PERMISSIONS")]:
        for kind, resource in [("experiments", made["experiment"]), ("registered-models", made["model"])]:
            grant(stack, admin, people[principal]["username"], resource, level, kind=kind)
    # The group's EDIT does not help "denied": a user grant comes first, and it is a deny.
    for kind, resource in [("experiments", made["experiment"]), ("registered-models", made["model"])]:
        grant(stack, admin, team, resource, "EDIT", group=True, kind=kind)
    return {"made": made, "people": people, "owner_env": owner_env}


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_each_principal_gets_exactly_what_its_permission_allows(stack, world, principal):
    made, person = world["made"], world["people"][principal]
    got = run_client_script(stack, person["env"], FAMILIES, made["experiment"], made["run"], person["victim"],
                            made["model"], made["source"], uuid.uuid4().hex[:6])
    assert got == expected(HOLDS[principal]), f"{principal} ({HOLDS[principal]})"


def test_a_denial_names_the_resource_and_the_permission_needed(stack, world):
    made = world["made"]
    reader = login(stack, world["people"]["reader"]["username"].split("@")[0])
    r = reader.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": made["experiment"]},
                    headers=API, timeout=TIMEOUT)
    assert r.status_code == 403, r.text[:300]
    body = r.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert f"experiment {made['experiment']}" in body["message"] and "EDIT" in body["message"], body


CREATE_AND_USE = r"""
import json, sys
from mlflow import MlflowClient
c = MlflowClient()
exp = c.create_experiment(sys.argv[1])
run = c.create_run(exp).info.run_id
c.log_metric(run, "loss", 0.5)
print(json.dumps({"experiment": exp, "metric": c.get_run(run).data.metrics["loss"]}))
"""

SEARCH_NAMES = r"""
import json
from mlflow import MlflowClient
print(json.dumps([e.name for e in MlflowClient().search_experiments(max_results=1000)]))
"""


def test_a_creator_uses_a_new_experiment_at_once_and_others_do_not_see_it(stack):
    maker, other = (new_idp_user(stack, [USER_GROUP], p) for p in ("maker", "other"))
    maker_env = client_env(f"{maker}@example.com", access_token(stack, login(stack, maker)))
    other_env = client_env(f"{other}@example.com", access_token(stack, login(stack, other)))
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    made = run_client_script(stack, maker_env, CREATE_AND_USE, name)
    assert made["metric"] == 0.5
    assert name in run_client_script(stack, maker_env, SEARCH_NAMES)
    assert name not in run_client_script(stack, other_env, SEARCH_NAMES)


def test_a_revoked_grant_stops_working_within_about_a_second(stack, admin):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"rev-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    sub = new_idp_user(stack, [USER_GROUP], "reader")
    reader = login(stack, sub)
    get = f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
    assert reader.get(get, headers=API, timeout=TIMEOUT).status_code == 403
    # Envoy's VMs cached the refusal; the grant shows within the epoch bound (1 s poll).
    grant(stack, admin, f"{sub}@example.com", exp, "READ")
    assert within(3.0, lambda: reader.get(get, headers=API, timeout=TIMEOUT).status_code == 200), \
        "the new grant does not work after 3 s"
    revoke(stack, admin, f"{sub}@example.com", exp)
    assert within(3.0, lambda: reader.get(get, headers=API, timeout=TIMEOUT).status_code == 403), \
        "the revoked grant still works after 3 s"


def within(seconds: float, condition) -> bool:
    """Whether `condition()` comes true within `seconds` (polled every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_group_deny_beats_a_group_manage(stack, admin):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"grp-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    managers, banned = f"managers-{uuid.uuid4().hex[:6]}", f"banned-{uuid.uuid4().hex[:6]}"
    grant(stack, admin, managers, exp, "MANAGE", group=True)
    grant(stack, admin, banned, exp, "NO_PERMISSIONS", group=True)
    both = login(stack, new_idp_user(stack, [USER_GROUP, managers, banned], "both"))
    only_managers = login(stack, new_idp_user(stack, [USER_GROUP, managers], "mgr"))
    get = f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
    assert only_managers.get(get, headers=API, timeout=TIMEOUT).status_code == 200
    assert both.get(get, headers=API, timeout=TIMEOUT).status_code == 403


def test_pattern_grants_take_the_best_priority_that_matches(stack, admin):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    tag = uuid.uuid4().hex[:6]
    ids = {}
    for name in (f"prio-{tag}-x1", f"prio-{tag}-y1", f"other-prio-{tag}"):
        ids[name] = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": name},
                               headers=API, timeout=TIMEOUT).json()["experiment_id"]
    sub = new_idp_user(stack, [USER_GROUP], "pat")
    user = f"{sub}@example.com"
    pattern_grant(stack, admin, user, f"prio-{tag}-", 10, "READ")
    pattern_grant(stack, admin, user, f"prio-{tag}-x", 5, "EDIT")
    browser = login(stack, sub)

    def can(name, need):
        if need == "READ":
            r = browser.get(f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={ids[name]}",
                            headers=API, timeout=TIMEOUT)
        else:
            r = browser.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": ids[name]},
                             headers=API, timeout=TIMEOUT)
        assert r.status_code in (200, 403), r.text[:300]
        return r.status_code == 200

    assert can(f"prio-{tag}-x1", "EDIT"), "priority 5 (EDIT) should win over priority 10 (READ)"
    assert can(f"prio-{tag}-y1", "READ") and not can(f"prio-{tag}-y1", "EDIT")
    # Anchored at the start, as Python's re.match: "other-prio-..." matches neither.
    assert not can(f"other-prio-{tag}", "READ")


def test_a_user_grant_comes_before_a_group_grant(stack, admin):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"ord-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    team = f"editors-{uuid.uuid4().hex[:6]}"
    sub = new_idp_user(stack, [USER_GROUP, team], "ord")
    grant(stack, admin, team, exp, "EDIT", group=True)
    grant(stack, admin, f"{sub}@example.com", exp, "READ")
    browser = login(stack, sub)
    r = browser.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp}, headers=API,
                     timeout=TIMEOUT)
    # The default order is user, group, regex, group-regex: the user's READ decides.
    assert r.status_code == 403 and "from user" in r.json()["message"], r.text[:300]
    assert requests.get(f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}",
                        timeout=TIMEOUT).status_code == 401


def test_the_source_order_changes_the_outcome(stack, admin):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"src-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    team = f"editors-{uuid.uuid4().hex[:6]}"
    sub = new_idp_user(stack, [USER_GROUP, team], "src")
    grant(stack, admin, team, exp, "EDIT", group=True)
    grant(stack, admin, f"{sub}@example.com", exp, "READ")
    browser = login(stack, sub)

    def create_run():
        return browser.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp},
                            headers=API, timeout=TIMEOUT).status_code

    assert create_run() == 403
    with service_settings(stack, PERMISSION_SOURCE_ORDER="group,user,regex,group-regex"):
        # The restarted service moves the policy epoch, so no VM keeps the old decision.
        assert within(5.0, lambda: create_run() == 200), "group-first order did not let the group's EDIT decide"


def test_the_default_permission_applies_where_no_grant_does(stack):
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "owner"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"dflt-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    nobody = login(stack, new_idp_user(stack, [USER_GROUP], "nobody"))
    get = f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
    assert nobody.get(get, headers=API, timeout=TIMEOUT).status_code == 403
    with service_settings(stack, DEFAULT_MLFLOW_PERMISSION="READ"):
        assert within(5.0, lambda: nobody.get(get, headers=API, timeout=TIMEOUT).status_code == 200)
        r = nobody.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp}, headers=API,
                        timeout=TIMEOUT)
        assert r.status_code == 403 and "from fallback" in r.json()["message"], r.text[:300]
        log = (stack.log_path("service")).read_text()
        assert "DEFAULT_MLFLOW_PERMISSION" in log and "READ" in log


def test_the_creators_groups_get_the_default_group_permission(stack):
    # Every group of the creator gets it, the sign-in group too: so the stranger signs
    # in through another allowed group, sharing none with the maker.
    team = f"team-{uuid.uuid4().hex[:6]}"
    with service_settings(stack, DEFAULT_MLFLOW_GROUP_PERMISSION="READ",
                          OIDC_GROUP_NAME=f"{USER_GROUP},outsiders"):
        maker = login(stack, new_idp_user(stack, [USER_GROUP, team], "maker"))
        mate = login(stack, new_idp_user(stack, [team, "outsiders"], "mate"))
        stranger = login(stack, new_idp_user(stack, ["outsiders"], "stranger"))
        exp = maker.post(f"{stack.url}/api/2.0/mlflow/experiments/create",
                         json={"name": f"grp-dflt-{uuid.uuid4().hex[:8]}"}, headers=API,
                         timeout=TIMEOUT).json()["experiment_id"]
        get = f"{stack.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
        assert mate.get(get, headers=API, timeout=TIMEOUT).status_code == 200
        assert stranger.get(get, headers=API, timeout=TIMEOUT).status_code == 403
        r = mate.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp}, headers=API,
                      timeout=TIMEOUT)
        assert r.status_code == 403, "the group default is READ, not EDIT"


def test_a_large_artifact_upload_streams_through(stack):
    """Bigger than Envoy's per-connection buffer (8 MiB): it only passes if the filter
    never holds the body, even when the decision needs a callout."""
    owner = login(stack, new_idp_user(stack, [USER_GROUP], "uploader"))
    exp = owner.post(f"{stack.url}/api/2.0/mlflow/experiments/create", json={"name": f"big-{uuid.uuid4().hex[:8]}"},
                     headers=API, timeout=TIMEOUT).json()["experiment_id"]
    run = owner.post(f"{stack.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp}, headers=API,
                     timeout=TIMEOUT).json()["run"]["info"]["run_id"]
    payload = bytes(range(256)) * (24 * 4096)  # 24 MiB
    url = f"{stack.url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/big.bin"
    put = owner.put(url, data=payload, headers={"Content-Type": "application/octet-stream"}, timeout=120)
    assert put.status_code == 200, put.text[:300]
    back = owner.get(url, timeout=120)
    assert back.status_code == 200 and back.content == payload
