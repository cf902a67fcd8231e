"""A person with a browser: sent to sign in, signs in at the IdP, uses the MLflow UI."""
import urllib.parse as up

import pytest
import requests

from helpers import (API, NAVIGATION, SESSION_COOKIE, TIMEOUT, assert_unauthenticated, login,
                     marker, sign_in)


@pytest.mark.parametrize("path", ["/", "/static-files/index.html?o=1&x=a%20b"])
def test_opening_mlflow_without_a_session_redirects_to_sign_in(stack, access_log, path):
    mark = marker()
    path = f"{path}{'&' if '?' in path else '?'}m={mark}"
    r = requests.get(stack.url + path, headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)

    assert r.status_code == 302, r.text[:300]
    location = up.urlsplit(r.headers["Location"])
    assert location.netloc in ("", f"127.0.0.1:{stack.listen_port}"), r.headers["Location"]
    assert location.path == "/oidc/login"
    assert up.parse_qs(location.query).get("next") == [path], r.headers["Location"]
    access_log.assert_mlflow_never_saw(mark)


@pytest.mark.parametrize("method, path, headers", [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1", NAVIGATION),  # API, even from a browser
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1", API),
    ("POST", "/ajax-api/2.0/mlflow/experiments/search", API),
    ("POST", "/graphql", NAVIGATION),
    ("GET", "/graphql", NAVIGATION),
    ("POST", "/", NAVIGATION),  # not a navigation: not a GET
    ("GET", "/", {"Accept": "application/json"}),  # not a navigation: does not ask for HTML
], ids=["api-from-browser", "api", "ajax-api", "graphql-post", "graphql-get", "form-post", "json-get"])
def test_calls_without_credentials_get_401_not_a_redirect(stack, access_log, method, path, headers):
    mark = marker()
    url = f"{stack.url}{path}{'&' if '?' in path else '?'}m={mark}"
    r = requests.request(method, url, headers=headers, json={"max_results": 1} if method == "POST" else None,
                         allow_redirects=False, timeout=TIMEOUT)

    assert_unauthenticated(r)
    access_log.assert_mlflow_never_saw(mark)


def test_signed_in_user_gets_the_mlflow_ui_and_its_data(stack, access_log):
    browser = login(stack, "alice")

    page = browser.get(stack.url + "/", allow_redirects=False, timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:300]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<html" in page.text.lower()

    # What the UI does: make an experiment, then find it in the list.
    name = f"ui-{marker()}"
    made = browser.post(f"{stack.url}/ajax-api/2.0/mlflow/experiments/create", json={"name": name},
                        headers=API, timeout=TIMEOUT)
    assert made.status_code == 200, made.text[:300]
    mark = marker()
    data = browser.post(f"{stack.url}/ajax-api/2.0/mlflow/experiments/search?m={mark}",
                        json={"max_results": 1000}, headers=API, timeout=TIMEOUT)
    assert data.status_code == 200, data.text[:300]
    assert any(e["name"] == name for e in data.json()["experiments"])
    entry = access_log.assert_mlflow_answered(mark)
    assert entry["user"] == "alice@example.com"


def test_sign_in_returns_to_the_page_first_asked_for(stack):
    path = f"/?m={marker()}"
    browser = login(stack, "bob", path=path)  # asserts /callback sends bob back to `path`

    r = browser.get(stack.url + path, allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 200


def test_user_outside_the_allowed_groups_cannot_sign_in(stack):
    attempt = sign_in(stack, "eve")

    assert attempt.callback.status_code == 403, attempt.callback.text[:500]
    assert "group" in attempt.callback.text.lower(), attempt.callback.text[:500]
    assert not attempt.browser.cookies.get(SESSION_COOKIE)
    again = attempt.browser.get(stack.url + "/", allow_redirects=False, timeout=TIMEOUT)
    assert again.status_code == 302 and "/oidc/login" in again.headers["Location"]
    api = attempt.browser.get(stack.url + "/api/2.0/mlflow/experiments/search?max_results=1",
                              headers=API, timeout=TIMEOUT)
    assert_unauthenticated(api)


@pytest.mark.parametrize("user, is_admin", [("admin", True), ("alice", False)])
def test_auth_status_says_who_is_admin(stack, user, is_admin):
    browser = login(stack, user)

    r = browser.get(stack.url + "/oidc/auth/status", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["is_admin"] is is_admin, r.text
