"""Registered models and prompts through Envoy: grants by name, filtered searches, and
prompts (registered models tagged as prompts) with the MLflow client's prompt API."""
from __future__ import annotations

import time
import uuid

import pytest

from helpers import (API, TIMEOUT, access_token, client_env, grant, login, new_idp_user,
                     run_client_script)
from local_stack import USER_GROUP

PROMPTS = r"""
import json, sys
import mlflow
from mlflow.exceptions import MlflowException
action, name = sys.argv[1], sys.argv[2]
try:
    if action == "register":
        mlflow.genai.register_prompt(name=name, template="Hello {{name}}")
        print(json.dumps({"ok": True}))
    else:
        p = mlflow.genai.load_prompt(f"prompts:/{name}/1")
        print(json.dumps({"ok": True, "template": p.template}))
except MlflowException as e:
    print(json.dumps({"ok": False, "error_code": e.error_code}))
"""


@pytest.fixture(scope="module")
def registry(stack):
    admin = login(stack, "admin")
    owner_sub = new_idp_user(stack, [USER_GROUP], "modeler")
    owner = login(stack, owner_sub)
    tag = uuid.uuid4().hex[:6]
    names = [f"reg-{tag}-a", f"reg-{tag}-b"]
    for name in names:
        r = owner.post(f"{stack.url}/api/2.0/mlflow/registered-models/create", json={"name": name},
                       headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
    reader_sub = new_idp_user(stack, [USER_GROUP], "modelreader")
    grant(stack, admin, f"{reader_sub}@example.com", names[0], "READ", kind="registered-models")
    return {"tag": tag, "names": names, "admin": admin, "owner": owner, "owner_sub": owner_sub,
            "reader": login(stack, reader_sub), "reader_sub": reader_sub}


def test_model_search_shows_only_readable_models(stack, registry):
    r = registry["reader"].get(f"{stack.url}/api/2.0/mlflow/registered-models/search",
                               params={"filter": f"name LIKE 'reg-{registry['tag']}-%'"}, headers=API,
                               timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert [m["name"] for m in r.json().get("registered_models", [])] == [registry["names"][0]]
    r = registry["owner"].get(f"{stack.url}/api/2.0/mlflow/registered-models/search",
                              params={"filter": f"name LIKE 'reg-{registry['tag']}-%'"}, headers=API,
                              timeout=TIMEOUT)
    assert sorted(m["name"] for m in r.json()["registered_models"]) == registry["names"]


def test_a_model_the_user_may_not_read_is_refused_by_name(stack, registry):
    reader = registry["reader"]
    ok = reader.get(f"{stack.url}/api/2.0/mlflow/registered-models/get", params={"name": registry["names"][0]},
                    headers=API, timeout=TIMEOUT)
    assert ok.status_code == 200
    no = reader.get(f"{stack.url}/api/2.0/mlflow/registered-models/get", params={"name": registry["names"][1]},
                    headers=API, timeout=TIMEOUT)
    assert no.status_code == 403 and registry["names"][1] in no.json()["message"], no.text[:300]


def test_deleting_a_model_removes_its_grants(stack, registry):
    name = f"reg-{registry['tag']}-gone"
    owner = registry["owner"]
    assert owner.post(f"{stack.url}/api/2.0/mlflow/registered-models/create", json={"name": name},
                      headers=API, timeout=TIMEOUT).status_code == 200
    assert owner.delete(f"{stack.url}/api/2.0/mlflow/registered-models/delete", json={"name": name},
                        headers=API, timeout=TIMEOUT).status_code == 200
    # Someone else makes a model of the same name: the old owner holds nothing on it.
    other = login(stack, new_idp_user(stack, [USER_GROUP], "reuser"))
    assert other.post(f"{stack.url}/api/2.0/mlflow/registered-models/create", json={"name": name},
                      headers=API, timeout=TIMEOUT).status_code == 200
    # Within the epoch bound (Envoy's other workers learn of the deletion at their next poll).
    deadline = time.monotonic() + 3
    while True:
        r = owner.get(f"{stack.url}/api/2.0/mlflow/registered-models/get", params={"name": name}, headers=API,
                      timeout=TIMEOUT)
        if r.status_code == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 403, r.text[:300]


def test_prompts_follow_their_own_grants(stack, registry):
    owner_env = client_env(f"{registry['owner_sub']}@example.com", access_token(stack, registry["owner"]))
    reader_env = client_env(f"{registry['reader_sub']}@example.com", access_token(stack, registry["reader"]))
    name = f"prompt-{registry['tag']}"
    assert run_client_script(stack, owner_env, PROMPTS, "register", name) == {"ok": True}
    assert run_client_script(stack, owner_env, PROMPTS, "load", name)["template"] == "Hello {{name}}"
    assert run_client_script(stack, reader_env, PROMPTS, "load", name) == {"ok": False,
                                                                          "error_code": "PERMISSION_DENIED"}
    grant(stack, registry["admin"], f"{registry['reader_sub']}@example.com", name, "READ", kind="prompts")
    loaded = run_client_script(stack, reader_env, PROMPTS, "load", name)
    assert loaded.get("template") == "Hello {{name}}", loaded


def test_versions_logged_models_and_the_artifact_root_show_only_what_the_user_may_read(stack, registry):
    owner, reader, admin = registry["owner"], registry["reader"], registry["admin"]
    api = f"{stack.url}/api/2.0/mlflow"
    exp = owner.post(f"{api}/experiments/create", json={"name": f"reg-{registry['tag']}-exp"}, headers=API,
                     timeout=TIMEOUT).json()["experiment_id"]
    run = owner.post(f"{api}/runs/create", json={"experiment_id": exp}, headers=API,
                     timeout=TIMEOUT).json()["run"]["info"]
    put = owner.put(f"{stack.url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run['run_id']}/artifacts/model/x.txt",
                    data=b"x", timeout=TIMEOUT)
    assert put.status_code == 200, put.text[:300]
    for name in registry["names"]:
        r = owner.post(f"{api}/model-versions/create",
                       json={"name": name, "source": run["artifact_uri"] + "/model", "run_id": run["run_id"]},
                       headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
    r = owner.post(f"{api}/logged-models", json={"experiment_id": exp, "name": "lm"}, headers=API,
                   timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]

    def versions(who):
        r = who.get(f"{api}/model-versions/search", params={"filter": f"name LIKE 'reg-{registry['tag']}-%'"},
                    headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        return sorted({v["name"] for v in r.json().get("model_versions", [])})

    def logged_models(who):
        r = who.post(f"{api}/logged-models/search", json={"experiment_ids": [exp]}, headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        return [m["info"]["experiment_id"] for m in r.json().get("models", [])]

    def artifact_root(who):
        r = who.get(f"{stack.url}/api/2.0/mlflow-artifacts/artifacts", headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        return {f["path"] for f in r.json().get("files", [])}

    assert versions(owner) == registry["names"] and versions(reader) == [registry["names"][0]]
    assert logged_models(owner) == [exp] and logged_models(reader) == []
    assert exp in artifact_root(owner) and exp not in artifact_root(reader)
    # A grant on the experiment opens both (within the epoch bound).
    grant(stack, admin, f"{registry['reader_sub']}@example.com", exp, "READ")
    deadline = time.monotonic() + 3
    while exp not in artifact_root(reader) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exp in artifact_root(reader) and logged_models(reader) == [exp]
