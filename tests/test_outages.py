"""What users see while a part of the stack is down: sign-in fails clearly, credentials
are still checked inline, decisions that need the policy service fail closed (503),
nothing gets through without credentials."""
import time

import pytest
import requests

from conftest import CLOCK_SKEW_SECONDS, SESSION_TOKEN_TTL_SECONDS, wait_past_jwks_refetch_limit
from helpers import (API, NAVIGATION, TIMEOUT, assert_unauthenticated, bearer, id_token_for, login,
                     marker, signed_with_own_key)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# A route that needs a signed-in user and no permission: answered with the service down.
VERSION = "/version"


@pytest.fixture
def policy_service_down(stack):
    stack.stop_service()
    try:
        yield
    finally:
        stack.start_service()


@pytest.fixture
def mlflow_down(stack):
    stack.stop_mlflow()
    try:
        yield
    finally:
        stack.start_mlflow()


def test_policy_service_down(stack, access_log, policy_service_down):
    # Signing in needs the service: a clear 503 from Envoy.
    r = requests.get(stack.url + "/oidc/login?next=%2F", headers=NAVIGATION, allow_redirects=False,
                     timeout=TIMEOUT)
    assert r.status_code == 503, r.text[:300]
    assert r.json()["message"], r.text

    # A bearer token is checked in the filter alone: what needs no permission still works.
    token = id_token_for(stack.idp_url, "alice")
    mark = marker()
    ok = requests.get(f"{stack.url}{VERSION}?m={mark}", headers=bearer(token), timeout=TIMEOUT)
    assert ok.status_code == 200, ok.text[:300]
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"
    # What needs a decision fails closed, before MLflow is asked (once the VMs stop
    # trusting their cached decisions: at most three epoch polls).
    time.sleep(3.5)
    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 503 and "permissions cannot be checked" in r.json()["message"], r.text[:300]
    access_log.assert_mlflow_never_saw(mark)

    # Nothing else gets through.
    for headers in (API, {**API, "Authorization": "Bearer garbage"}):
        mark = marker()
        assert_unauthenticated(requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=headers, timeout=TIMEOUT))
        access_log.assert_mlflow_never_saw(mark)


def test_sign_in_works_again_once_the_policy_service_is_back(stack):
    stack.stop_service()
    stack.start_service()
    browser = login(stack, "alice")
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200


def test_mlflow_down_is_a_clear_503_for_signed_in_users_only(stack, mlflow_down):
    r = requests.get(stack.url + SEARCH, headers=bearer(id_token_for(stack.idp_url, "alice")), timeout=TIMEOUT)
    assert r.status_code == 503, r.text[:300]
    assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", r.text
    assert_unauthenticated(requests.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT))


def test_session_cookies_while_the_policy_service_is_down(stack, access_log):
    browser = login(stack, "alice")
    stack.stop_service()
    try:
        # A cookie within its lifetime is checked in the filter alone.
        mark = marker()
        r = browser.get(f"{stack.url}{VERSION}?m={mark}", headers=API, timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"
        # Past it, renewal needs the service: a clear 503, never a pass.
        time.sleep(SESSION_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS + 1)
        mark = marker()
        r = browser.get(f"{stack.url}{VERSION}?m={mark}", headers=API, timeout=TIMEOUT)
        assert r.status_code == 503, r.text[:300]
        assert "policy service" in r.json()["message"], r.text
        access_log.assert_mlflow_never_saw(mark)
    finally:
        stack.start_service()
    # Back up: the same browser goes on without signing in again.
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200


@pytest.mark.restarts_idp
def test_idp_down(stack, access_log):
    token = id_token_for(stack.idp_url, "alice")
    assert requests.get(stack.url + SEARCH, headers=bearer(token), timeout=TIMEOUT).status_code == 200
    stack.stop_idp()
    try:
        wait_past_jwks_refetch_limit()
        # A token already verified keeps working.
        mark = marker()
        r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(token), timeout=TIMEOUT)
        assert r.status_code == 200, r.text[:300]
        # One under a key the filter has not seen needs the IdP: 503, saying so.
        mark = marker()
        r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(signed_with_own_key(token, kid="new-key")),
                         timeout=TIMEOUT)
        assert r.status_code == 503, r.text[:300]
        assert "identity provider" in r.json()["message"], r.text
        access_log.assert_mlflow_never_saw(mark)
        # Garbage is still refused outright.
        assert_unauthenticated(requests.get(stack.url + SEARCH, headers={**API, "Authorization": "Bearer x.y.z"},
                                            timeout=TIMEOUT))
    finally:
        stack.start_idp()
        wait_past_jwks_refetch_limit()
