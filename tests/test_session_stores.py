"""Where server-side sessions live (SESSION_TYPE): sign-in, renewal of the short-lived
cookie and logout with the policy service on Redis and on files, and what users see
while Redis is down.

The stack's policy service is restarted with other settings for this module and
restored afterwards (same database and signing key, so nothing else notices). Redis is
the one tests/with_redis.sh started (`make pytest`), found through
POLICY_SERVICE_TEST_REDIS=host:port.
"""
import os
import subprocess
import time
import uuid

import pytest
import requests

from conftest import CLOCK_SKEW_SECONDS, SESSION_TOKEN_TTL_SECONDS
from helpers import (API, NAVIGATION, TIMEOUT, assert_unauthenticated, login, marker, session_cookie,
                     set_cookie_value, sign_in, with_cookie)
from local_stack import free_port

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# Past the cookie's lifetime, with the filter's clock skew, by a margin.
PAST_COOKIE_LIFETIME = SESSION_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS + 1
REDIS_DB = "1"


def test_redis() -> tuple[str, str]:
    value = os.environ.get("POLICY_SERVICE_TEST_REDIS", "").strip()
    if not value:
        pytest.fail("POLICY_SERVICE_TEST_REDIS is not set: run the tests through `make pytest` "
                    "(tests/with_redis.sh starts a Redis for them)")
    host, _, port = value.rpartition(":")
    return host, port


test_redis.__test__ = False  # a helper, not a test


def redis_keys(pattern: str) -> list[str]:
    host, port = test_redis()
    out = subprocess.run(["redis-cli", "-h", host, "-p", port, "-n", REDIS_DB, "--scan", "--pattern", pattern],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [line for line in out.splitlines() if line]


def redis_env(prefix: str, port: str | None = None) -> dict[str, str]:
    host, redis_port = test_redis()
    return {"SESSION_TYPE": "redis", "REDIS_HOST": host, "REDIS_PORT": port or redis_port,
            "REDIS_DB": REDIS_DB, "SESSION_KEY_PREFIX": prefix}


def restart_service(stack, env: dict[str, str]) -> None:
    stack.stop_service()
    stack.service_env = env
    stack.start_service()


@pytest.fixture(scope="module")
def original_service_env(stack):
    original = dict(stack.service_env)
    try:
        yield original
    finally:
        restart_service(stack, original)


@pytest.fixture(scope="module", params=["redis", "filesystem"])
def session_store(request, stack, original_service_env):
    """The policy service on this SESSION_TYPE; a way to list the sessions it holds."""
    if request.param == "redis":
        prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
        restart_service(stack, {**original_service_env, **redis_env(prefix)})
        yield lambda: [k for k in redis_keys(prefix + "*") if not k.startswith(prefix + "user:")]
    else:
        directory = stack.base_dir / f"sessions-{uuid.uuid4().hex[:8]}"
        restart_service(stack, {**original_service_env, "SESSION_TYPE": "filesystem",
                                "SESSION_FILE_DIR": str(directory)})
        yield lambda: sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_sign_in_renewal_and_logout(stack, access_log, session_store):
    before = set(session_store())
    browser = login(stack, "alice")
    first = session_cookie(browser)
    # The session is in this store (not in the database).
    assert len(set(session_store()) - before) == 1, session_store()

    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"

    # Past the cookie's lifetime the filter renews it from the store.
    time.sleep(PAST_COOKIE_LIFETIME)
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    renewed = set_cookie_value(r)
    assert renewed and renewed != first, f"no renewed cookie: {dict(r.headers)}"
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"
    # A browser-session cookie (SESSION_PERMANENT=false): no Max-Age, no Expires.
    set_cookie = r.headers["Set-Cookie"]
    assert "max-age" not in set_cookie.lower() and "expires" not in set_cookie.lower(), set_cookie

    # Someone copied the browser's cookie; the user signs out in the browser.
    copied = session_cookie(browser)
    out = browser.get(stack.url + "/logout", allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code == 302, out.text[:300]
    nav = browser.get(stack.url + "/", headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)
    assert nav.status_code == 302 and "/oidc/login" in nav.headers["Location"], nav.text[:300]

    # The copied one works at most until it expires (checked inline, by design) ...
    time.sleep(PAST_COOKIE_LIFETIME)
    # ... and then the session is over for it too.
    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=with_cookie(copied), timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert not set_cookie_value(r), "a cookie of an ended session was renewed"
    access_log.assert_mlflow_never_saw(mark)


@pytest.fixture
def redis_service(stack, original_service_env):
    """The service on Redis; returns a function that restarts it on another port (or back)."""
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"

    def on_port(port: str | None = None) -> None:
        restart_service(stack, {**original_service_env, **redis_env(prefix, port)})

    on_port()
    try:
        yield on_port
    finally:
        restart_service(stack, original_service_env)


def test_redis_down_means_503_never_a_pass(stack, access_log, redis_service):
    browser = login(stack, "bob")
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200

    # The service now reaches no Redis (nothing listens on that port).
    redis_service(str(free_port()))

    # Renewal cannot read the session: 503 from Envoy, MLflow never sees the request.
    time.sleep(PAST_COOKIE_LIFETIME)
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 503, r.text[:300]
    assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", r.text
    assert not set_cookie_value(r)
    access_log.assert_mlflow_never_saw(mark)

    # Signing in cannot record a session: a clear 503 page, no cookie.
    s = sign_in(stack, "alice")
    assert s.callback.status_code == 503, s.callback.text[:300]
    assert "SESSION_TYPE=redis" in s.callback.text, s.callback.text[:500]
    assert not s.browser.cookies.get("mlflow_session")

    # Logging out cannot end the session: said so, and the cookie is kept for another try.
    out = browser.get(stack.url + "/logout", allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code == 503, out.text[:300]
    assert "still signed in" in out.text, out.text[:500]
    assert not set_cookie_value(out)

    # Redis back: the session was never lost, the cookie is renewed again.
    redis_service()
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert set_cookie_value(r), "the cookie was not renewed"
    assert access_log.assert_mlflow_answered(mark)["user"] == "bob@example.com"
