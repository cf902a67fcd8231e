"""Personal access tokens: a signed-in user makes one, an MLflow client without a browser
uses it as its password (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), and once
revoked it stops working within the filter's cache bound."""
import base64
import time
import uuid

import pytest
import requests

from conftest import ACCESS_TOKEN_CACHE_SECONDS
from helpers import (API, TIMEOUT, assert_unauthenticated, bearer, id_token_for, login, marker,
                     run_mlflow_client)

TOKENS = "/api/2.0/mlflow/users/current/tokens"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def basic(username: str, token: str) -> dict:
    return {**API, "Authorization": "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()}


def create_token(browser, stack, name="ci", path=TOKENS, **extra):
    r = browser.post(stack.url + path, json={"name": name, **extra}, headers=API, timeout=TIMEOUT)
    assert r.status_code == 201, r.text[:300]
    return r.json()


@pytest.fixture(scope="module")
def alice(stack):
    return login(stack, "alice")


def test_a_token_is_shown_once_and_listed_without_its_secret(stack, alice):
    made = create_token(alice, stack, name=f"laptop-{uuid.uuid4().hex[:6]}")
    assert made["token"].startswith("mlf_") and made["username"] == "alice@example.com"
    assert made["expires_at"] - made["created_at"] == 365 * 24 * 3600

    listed = alice.get(stack.url + TOKENS, headers=API, timeout=TIMEOUT)
    assert listed.status_code == 200, listed.text[:300]
    mine = [t for t in listed.json()["tokens"] if t["id"] == made["id"]]
    assert mine and mine[0]["name"] == made["name"]
    assert made["token"] not in listed.text
    # The MLflow UI calls the same routes under /ajax-api.
    assert alice.get(stack.url + "/ajax-api/2.0/mlflow/users/current/tokens", headers=API,
                     timeout=TIMEOUT).status_code == 200


def test_mlflow_client_with_a_token_logs_a_run(stack, alice, access_log):
    token = create_token(alice, stack)["token"]
    offset = access_log.size()

    done = run_mlflow_client(stack, {"MLFLOW_TRACKING_USERNAME": "alice@example.com",
                                     "MLFLOW_TRACKING_PASSWORD": token}, f"pat-{uuid.uuid4().hex[:8]}")

    assert done.returncode == 0, done.stderr[-3000:]
    calls = [e for e in access_log.since(offset) if "/mlflow/runs/create" in (e.get("path") or "")]
    assert calls and all(e["user"] == "alice@example.com" and e["details"] == "via_upstream" for e in calls)
    # The use is recorded, without a write on every request.
    listed = alice.get(stack.url + TOKENS, headers=API, timeout=TIMEOUT).json()["tokens"]
    assert any(t["token_prefix"] == token[4:12] and t["last_used_at"] for t in listed)


def test_a_token_works_only_with_its_own_username(stack, alice, access_log):
    token = create_token(alice, stack)["token"]
    assert requests.get(stack.url + SEARCH, headers=basic("Alice@Example.com", token), timeout=TIMEOUT).status_code == 200
    for username, secret in [("bob@example.com", token), ("alice@example.com", token[:-2] + "xx"),
                             ("alice@example.com", "mlf_00000000_nope")]:
        mark = marker()
        r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=basic(username, secret), timeout=TIMEOUT)
        assert_unauthenticated(r)
        access_log.assert_mlflow_never_saw(mark)


def test_a_revoked_token_stops_working_within_the_bound(stack, alice, access_log):
    made = create_token(alice, stack)
    creds = basic("alice@example.com", made["token"])
    assert requests.get(stack.url + SEARCH, headers=creds, timeout=TIMEOUT).status_code == 200

    gone = alice.delete(f"{stack.url}{TOKENS}/{made['id']}", headers=API, timeout=TIMEOUT)
    assert gone.status_code == 200, gone.text[:300]
    time.sleep(ACCESS_TOKEN_CACHE_SECONDS + 0.5)

    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=creds, timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert "revoked" in r.json()["message"], r.text
    access_log.assert_mlflow_never_saw(mark)


def test_at_most_twenty_live_tokens_and_a_year_at_most(stack):
    bob = login(stack, "bob")
    mine = bob.get(stack.url + TOKENS, headers=API, timeout=TIMEOUT).json()["tokens"]
    for i in range(20 - len(mine)):
        create_token(bob, stack, name=f"t{i}", expiration=1)
    r = bob.post(stack.url + TOKENS, json={"name": "one-too-many"}, headers=API, timeout=TIMEOUT)
    assert r.status_code == 400 and "20" in r.json()["message"], r.text
    for t in bob.get(stack.url + TOKENS, headers=API, timeout=TIMEOUT).json()["tokens"]:
        bob.delete(f"{stack.url}{TOKENS}/{t['id']}", headers=API, timeout=TIMEOUT)
    r = bob.post(stack.url + TOKENS, json={"name": "forever", "expiration": 400}, headers=API, timeout=TIMEOUT)
    assert r.status_code == 400 and "366" in r.json()["message"], r.text


def test_an_admin_manages_anyones_tokens_and_a_user_cannot(stack, alice):
    admin = login(stack, "admin")
    made = create_token(admin, stack, path="/api/2.0/mlflow/users/bob@example.com/tokens")
    assert made["username"] == "bob@example.com" and made["created_by"] == "admin@example.com"
    assert requests.get(stack.url + SEARCH, headers=basic("bob@example.com", made["token"]),
                        timeout=TIMEOUT).status_code == 200

    r = alice.get(stack.url + "/api/2.0/mlflow/users/bob@example.com/tokens", headers=API, timeout=TIMEOUT)
    assert r.status_code == 403, r.text[:300]
    r = alice.delete(f"{stack.url}{TOKENS}/{made['id']}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 404, "alice revoked bob's token"
    r = admin.delete(f"{stack.url}/api/2.0/mlflow/users/bob@example.com/tokens/{made['id']}", headers=API,
                     timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]


def test_tokens_are_issued_to_signed_in_browsers_only(stack):
    # A bearer token passes the filter, but issuing a token needs an interactive session.
    r = requests.post(stack.url + TOKENS, json={"name": "x"}, headers={**API, **bearer(id_token_for(stack.idp_url, "alice"))},
                      timeout=TIMEOUT)
    assert r.status_code == 401, r.text[:300]
    # No credentials at all: the filter refuses before the service.
    assert_unauthenticated(requests.post(stack.url + TOKENS, json={"name": "x"}, headers=API, timeout=TIMEOUT))


def test_the_internal_api_answers_only_the_filter(stack):
    # Straight to the policy service, past Envoy: without the filter's key, no oracle.
    r = requests.post(stack.service_url + "/authz/v1/credentials/basic", timeout=TIMEOUT,
                      json={"username": "alice@example.com", "token": "mlf_00000000_guess"})
    assert r.status_code == 403, r.text[:300]
    assert requests.get(stack.service_url + "/authz/v1/keys", timeout=TIMEOUT).status_code == 200
