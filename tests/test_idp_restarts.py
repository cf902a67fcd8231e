"""The IdP restarts: it signs with a new key (rotation), or with short-lived tokens.
These tests run last (marker `restarts_idp`) and leave a running IdP behind."""
import time

import pytest
import requests

from conftest import CLOCK_SKEW_SECONDS, wait_past_jwks_refetch_limit
from helpers import API, TIMEOUT, assert_unauthenticated, bearer, id_token_for, login, marker

pytestmark = pytest.mark.restarts_idp

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def get(stack, token, mark):
    return requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=bearer(token), timeout=TIMEOUT)


@pytest.fixture
def restore_idp(stack):
    wait_past_jwks_refetch_limit()
    yield
    stack.restart_idp()
    wait_past_jwks_refetch_limit()


def test_rotated_idp_key_is_picked_up_and_the_old_key_refused(stack, access_log, restore_idp):
    used = id_token_for(stack.idp_url, "alice")
    unused = id_token_for(stack.idp_url, "alice")  # never shown to the filter before rotation
    assert get(stack, used, marker()).status_code == 200

    stack.restart_idp()
    fresh = id_token_for(stack.idp_url, "alice")

    mark = marker()
    r = get(stack, fresh, mark)
    assert r.status_code == 200, f"a token of the IdP's new key was refused: {r.text[:300]}"
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"

    mark = marker()
    assert_unauthenticated(get(stack, unused, mark))
    access_log.assert_mlflow_never_saw(mark)


def test_sign_in_works_after_the_idp_rotated_its_key(stack, restore_idp):
    stack.restart_idp()
    browser = login(stack, "bob")
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200


def test_expired_token_is_refused(stack, access_log, restore_idp):
    max_age = 2
    stack.restart_idp(token_max_age=max_age)
    token = id_token_for(stack.idp_url, "alice")
    issued = time.time()

    fresh = get(stack, token, marker())
    assert fresh.status_code == 200, f"a fresh token of the restarted IdP (new key) was refused: {fresh.text[:300]}"
    time.sleep(max(0.0, issued + max_age + CLOCK_SKEW_SECONDS + 1 - time.time()))

    mark = marker()
    assert_unauthenticated(get(stack, token, mark))
    access_log.assert_mlflow_never_saw(mark)
