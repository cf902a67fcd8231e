"""OIDC_USE_REFRESH_TOKEN: the session keeps the IdP's refresh token (sealed) and passes
the group gate again at every renewal of the short-lived cookie, with no browser
round trip. A user taken out of the allowed group loses an existing session within
the cookie's lifetime, and cannot sign in again; a promotion shows without a new login.

The stack's policy service runs with the setting for this module only."""
import time
import uuid

import pytest

from conftest import CLOCK_SKEW_SECONDS, SESSION_TOKEN_TTL_SECONDS
from helpers import API, TIMEOUT, assert_unauthenticated, login, marker, set_idp_user, sign_in

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# Past the cookie's lifetime, with the filter's clock skew, by a margin.
PAST_COOKIE_LIFETIME = SESSION_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS + 1


@pytest.fixture(scope="module")
def refreshing_service(stack):
    original = dict(stack.service_env)
    stack.stop_service()
    stack.service_env = {**original, "OIDC_USE_REFRESH_TOKEN": "true"}
    stack.start_service()
    try:
        yield
    finally:
        stack.stop_service()
        stack.service_env = original
        stack.start_service()


def status(browser, stack) -> dict:
    return browser.get(stack.url + "/oidc/auth/status", headers=API, timeout=TIMEOUT).json()


def test_a_user_removed_from_the_allowed_group_loses_the_session(stack, access_log, refreshing_service):
    user = f"frank-{uuid.uuid4().hex[:6]}"
    set_idp_user(stack, user, ["mlflow"])
    browser = login(stack, user)
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200

    # Renewals while still in the group keep the session going.
    time.sleep(PAST_COOKIE_LIFETIME)
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200

    set_idp_user(stack, user, ["other"])
    time.sleep(PAST_COOKIE_LIFETIME)
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert "no longer in an allowed group" in r.json()["message"], r.text
    access_log.assert_mlflow_never_saw(mark)

    again = sign_in(stack, user)
    assert again.callback.status_code == 403, again.callback.text[:300]


def test_a_promotion_at_the_idp_shows_at_the_next_renewal(stack, refreshing_service):
    user = f"grace-{uuid.uuid4().hex[:6]}"
    set_idp_user(stack, user, ["mlflow"])
    browser = login(stack, user)
    assert status(browser, stack)["is_admin"] is False

    set_idp_user(stack, user, ["mlflow", "mlflow-admin"])
    time.sleep(PAST_COOKIE_LIFETIME)
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200  # renews
    assert status(browser, stack)["is_admin"] is True


@pytest.mark.restarts_idp
def test_without_the_idp_renewal_fails_closed(stack, access_log, refreshing_service):
    user = f"heidi-{uuid.uuid4().hex[:6]}"
    set_idp_user(stack, user, ["mlflow"])
    browser = login(stack, user)
    stack.stop_idp()
    try:
        time.sleep(PAST_COOKIE_LIFETIME)
        mark = marker()
        r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
        assert r.status_code == 503, r.text[:300]
        access_log.assert_mlflow_never_saw(mark)
    finally:
        stack.start_idp()
