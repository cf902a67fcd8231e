"""The permission-management API through Envoy, as admins, resource managers, readers and
outsiders use it: who may see and change what, and what they get when they may not."""
import time
import urllib.parse as up

import pytest
import requests

from helpers import (API, AccessLog, NAVIGATION, PERMISSIONS_API, TIMEOUT, access_token, grant, login,
                     marker, new_idp_user)


@pytest.fixture(scope="module")
def world(stack):
    """An experiment owned by an admin; a manager (MANAGE), a reader (READ) and an
    outsider (nothing) on it, each signed in."""
    admin = login(stack, "admin")
    name = f"mgmt-{marker()}"
    made = admin.post(f"{stack.url}/ajax-api/2.0/mlflow/experiments/create", json={"name": name},
                      headers=API, timeout=TIMEOUT)
    assert made.status_code == 200, made.text[:300]
    experiment = made.json()["experiment_id"]
    people = {"admin": admin}
    for role in ("manager", "reader", "outsider"):
        sub = new_idp_user(stack, ["mlflow"], prefix=role)
        people[role] = login(stack, sub)
        people[role].username = f"{sub}@example.com"
    admin.username = "admin@example.com"
    grant(stack, admin, people["manager"].username, experiment, "MANAGE")
    grant(stack, admin, people["reader"].username, experiment, "READ")
    yield {"experiment": experiment, "name": name, **people}
    # Envoy writes its access log in the background: let this module's lines land
    # before the next module reads the log from its own offset.
    log = AccessLog(stack.access_log)
    size, deadline = -1, time.monotonic() + 10
    while log.size() != size and time.monotonic() < deadline:
        size = log.size()
        time.sleep(1.5)


def call(stack, who, method, path, **kw):
    return who.request(method, stack.url + path, headers=API, timeout=TIMEOUT, **kw)


def assert_error(r, status):
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body["error_code"] and body["message"], body


@pytest.mark.parametrize("role, allowed", [("admin", True), ("manager", True), ("reader", False),
                                          ("outsider", False)])
@pytest.mark.parametrize("what", ["users", "groups"])
def test_who_has_access_needs_manage(stack, world, role, allowed, what):
    r = call(stack, world[role], "GET", f"{PERMISSIONS_API}/experiments/{world['experiment']}/{what}")
    if not allowed:
        assert_error(r, 403)
        return
    assert r.status_code == 200, r.text[:300]
    if what == "users":
        held = {u["name"]: u["permission"] for u in r.json()}
        assert held[world["reader"].username] == "READ"
        assert held[world["manager"].username] == "MANAGE"


@pytest.mark.parametrize("role, sees", [("admin", True), ("manager", True), ("reader", False),
                                        ("outsider", False)])
def test_the_experiment_list_shows_what_the_caller_can_manage(stack, world, role, sees):
    r = call(stack, world[role], "GET", f"{PERMISSIONS_API}/experiments",
             params={"search": world["name"], "limit": 10})
    assert r.status_code == 200, r.text[:300]
    ids = [e["id"] for e in r.json()]
    assert (world["experiment"] in ids) == sees
    assert int(r.headers["X-Total-Count"]) == len(ids)


@pytest.mark.parametrize("role, status", [("admin", 201), ("manager", 201), ("reader", 403),
                                          ("outsider", 403)])
def test_granting_needs_manage(stack, world, role, status):
    target = new_idp_user(stack, ["mlflow"], prefix="target")
    url = f"{PERMISSIONS_API}/users/{target}@example.com/experiments/{world['experiment']}"
    r = call(stack, world[role], "POST", url, json={"permission": "READ"})
    if status != 201:
        assert_error(r, status)
        return
    assert r.status_code == 201, r.text[:300]
    assert_error(call(stack, world[role], "POST", url, json={"permission": "READ"}), 409)
    assert_error(call(stack, world[role], "PATCH", url, json={"permission": "SUPER"}), 422)
    assert call(stack, world[role], "PATCH", url, json={"permission": "EDIT"}).status_code == 200
    assert call(stack, world[role], "GET", url).json()["permission"] == "EDIT"
    assert call(stack, world[role], "DELETE", url).status_code == 200
    assert_error(call(stack, world[role], "DELETE", url), 404)


def test_an_unknown_experiment_is_404_for_an_admin(stack, world):
    assert_error(call(stack, world["admin"], "GET", f"{PERMISSIONS_API}/experiments/987654321/users"), 404)


@pytest.mark.parametrize("role", ["manager", "reader", "outsider"])
def test_pattern_grants_users_and_the_audit_log_are_for_admins(stack, world, role):
    who = world[role]
    assert_error(call(stack, who, "GET", f"{PERMISSIONS_API}/users/{who.username}/experiment-patterns"), 403)
    assert_error(call(stack, who, "POST", "/api/2.0/mlflow/users", json={"username": "x@example.com"}), 403)
    assert_error(call(stack, who, "GET", f"{PERMISSIONS_API}/audit"), 403)
    assert_error(call(stack, who, "GET", f"{PERMISSIONS_API}/groups/mlflow/users"), 403)


def test_every_grant_change_is_audited_with_before_and_after(stack, world):
    admin = world["admin"]
    target = new_idp_user(stack, ["mlflow"], prefix="audited")
    url = f"{PERMISSIONS_API}/users/{target}@example.com/experiments/{world['experiment']}"
    assert call(stack, admin, "POST", url, json={"permission": "READ"}).status_code == 201
    assert call(stack, admin, "PATCH", url, json={"permission": "EDIT"}).status_code == 200
    log = call(stack, admin, "GET", f"{PERMISSIONS_API}/audit", params={"search": target}).json()
    assert [e["action"] for e in log] == ["grant.update", "grant.create"]
    assert log[0]["actor"] == "admin@example.com"
    assert '"READ"' in log[0]["before"] and '"EDIT"' in log[0]["after"]


def test_users_groups_and_the_current_user(stack, world):
    admin, reader = world["admin"], world["reader"]
    me = call(stack, reader, "GET", "/ajax-api/2.0/mlflow/users/current").json()
    assert me["username"] == reader.username and me["is_admin"] is False and "mlflow" in me["groups"]
    new = f"made-{marker()}@example.com"
    assert call(stack, admin, "POST", "/api/2.0/mlflow/users", json={"username": new}).status_code == 201
    assert_error(call(stack, admin, "POST", "/api/2.0/mlflow/users", json={"username": new}), 409)
    assert_error(call(stack, admin, "POST", "/api/2.0/mlflow/users", json={"name": new}), 422)
    listed = call(stack, reader, "GET", "/api/2.0/mlflow/users", params={"search": new})
    assert listed.json() == [new] and listed.headers["X-Total-Count"] == "1"
    assert call(stack, admin, "DELETE", "/api/2.0/mlflow/users", json={"username": new}).status_code == 200
    groups = call(stack, reader, "GET", f"{PERMISSIONS_API}/groups").json()["groups"]
    assert "mlflow" in groups
    members = call(stack, admin, "GET", f"{PERMISSIONS_API}/groups/mlflow/users").json()
    assert reader.username in [m["username"] for m in members]


def test_the_service_checks_credentials_itself(stack, world):
    path = "/api/2.0/mlflow/users/current"
    # Without credentials: the filter's 401; with a forged identity header, straight at
    # the service: still 401 (the service never trusts it).
    assert requests.get(stack.url + path, headers=API, timeout=TIMEOUT).status_code == 401
    forged = requests.get(stack.service_url + path, headers={**API, "x-forwarded-user": "admin@example.com"},
                          timeout=TIMEOUT)
    assert_error(forged, 401)
    # An access token in HTTP Basic, straight at the service.
    reader = world["reader"]
    token = access_token(stack, reader)
    r = requests.get(stack.service_url + path, auth=(reader.username, token), headers=API, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["username"] == reader.username, r.text[:300]
    bad = requests.get(stack.service_url + path, auth=(reader.username, token + "x"), headers=API,
                       timeout=TIMEOUT)
    assert_error(bad, 401)
    # A token cannot mint tokens: issuance needs the browser session.
    minted = requests.post(stack.service_url + path + "/tokens", auth=(reader.username, token),
                           json={"name": "from-a-token"}, headers=API, timeout=TIMEOUT)
    assert_error(minted, 401)


def test_the_ui_needs_a_signed_in_browser(stack, world):
    r = requests.get(stack.url + "/oidc/ui/", headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302
    assert up.urlsplit(r.headers["Location"]).path == "/oidc/login"
    page = world["reader"].get(stack.url + "/oidc/ui/", timeout=TIMEOUT)
    assert page.status_code == 200 and "app.js" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
