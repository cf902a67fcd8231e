"""The session cookie: renewed while the session lives, useless once it ended or was altered."""
import base64
import html
import json
import re
import time
import urllib.parse as up

import requests

from conftest import CLOCK_SKEW_SECONDS, PROVIDER_DISPLAY_NAME, SESSION_TOKEN_TTL_SECONDS
from helpers import (API, IDENTITY_HEADER, NAVIGATION, TIMEOUT, assert_unauthenticated, b64url,
                     login, marker, new_idp_user, session_cookie, set_cookie_value, with_cookie)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
# Past the cookie's lifetime, with the filter's clock skew, by a margin.
PAST_COOKIE_LIFETIME = SESSION_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS + 1


def test_session_cookie_renews_itself_while_the_session_lives(stack, access_log):
    browser = login(stack, "alice")
    first = session_cookie(browser)
    time.sleep(PAST_COOKIE_LIFETIME)

    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    renewed = set_cookie_value(r)
    assert renewed, f"no Set-Cookie renewing the session: {dict(r.headers)}"
    assert renewed != first
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"
    # The browser goes on with the new cookie.
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200


def test_tampered_session_cookie_is_refused(stack, access_log):
    browser = login(stack, "alice")
    cookie = session_cookie(browser)
    assert requests.get(stack.url + SEARCH, headers=with_cookie(cookie), timeout=TIMEOUT).status_code == 200

    header, payload, signature = cookie.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(sub="admin@example.com", adm=True)
    promoted = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    flipped = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    for forged in (promoted, flipped):
        mark = marker()
        r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=with_cookie(forged), timeout=TIMEOUT)
        assert_unauthenticated(r)
        access_log.assert_mlflow_never_saw(mark)


def test_identity_header_from_the_client_is_not_trusted(stack, access_log):
    mark = marker()
    alone = requests.get(f"{stack.url}{SEARCH}&m={mark}", timeout=TIMEOUT,
                         headers={**API, IDENTITY_HEADER: "admin@example.com"})
    assert_unauthenticated(alone)
    access_log.assert_mlflow_never_saw(mark)

    browser = login(stack, "alice")
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers={**API, IDENTITY_HEADER: "admin@example.com"},
                    timeout=TIMEOUT)
    assert r.status_code == 200
    assert access_log.assert_mlflow_answered(mark)["user"] == "alice@example.com"


def test_logout_signs_the_browser_out(stack):
    browser = login(stack, "alice")
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200

    out = browser.get(stack.url + "/logout", allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code in (200, 302, 303), out.text[:300]

    nav = browser.get(stack.url + "/", headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)
    assert nav.status_code == 302 and "/oidc/login" in nav.headers["Location"], nav.text[:300]
    assert_unauthenticated(browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT))


def test_cookie_of_an_ended_session_is_not_renewed(stack, access_log):
    browser = login(stack, "bob")
    kept = session_cookie(browser)  # what an attacker copied before the user signed out
    out = browser.get(stack.url + "/logout", allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code in (200, 302, 303), out.text[:300]
    time.sleep(PAST_COOKIE_LIFETIME)

    mark = marker()
    r = requests.get(f"{stack.url}{SEARCH}&m={mark}", headers=with_cookie(kept), timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert not set_cookie_value(r), "a cookie of an ended session was renewed"
    access_log.assert_mlflow_never_saw(mark)


def test_logout_also_signs_out_at_the_idp(stack):
    browser = login(stack, "alice")
    out = browser.get(stack.url + "/logout", allow_redirects=False, timeout=TIMEOUT)
    assert out.status_code in (302, 303), out.text[:300]
    location = out.headers["Location"]
    assert location.startswith(stack.idp_url + "/oauth2/end_session?"), location
    query = up.parse_qs(up.urlsplit(location).query)
    assert query["post_logout_redirect_uri"] == [stack.url + "/oidc/signed-out"] and query["client_id"] == ["mlflow"]

    # The IdP asks to confirm (a form), then sends the browser back to MLflow, signed out.
    page = browser.get(location, timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:300]
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text).group(1)
    back_to = re.search(r'name="redirect_uri" value="([^"]+)"', page.text).group(1)
    done = browser.post(up.urljoin(location, html.unescape(action)), data={"redirect_uri": html.unescape(back_to)},
                        allow_redirects=False, timeout=TIMEOUT)
    assert done.status_code in (302, 303) and done.headers["Location"] == stack.url + "/oidc/signed-out", \
        done.text[:300]
    # The landing page offers to sign in again, with the button the settings name.
    landing = browser.get(done.headers["Location"], headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)
    assert landing.status_code == 200 and "signed out" in landing.text, landing.text[:300]
    assert PROVIDER_DISPLAY_NAME in landing.text and 'href="/oidc/login?next=%2F"' in landing.text
    nav = browser.get(stack.url + "/", headers=NAVIGATION, allow_redirects=False, timeout=TIMEOUT)
    assert nav.status_code == 302 and "/oidc/login" in nav.headers["Location"]


def test_an_admin_ends_a_users_sessions_within_the_cookie_lifetime(stack, access_log):
    user = new_idp_user(stack, ["mlflow"], "sess")
    browser = login(stack, user)
    assert browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200
    sessions = f"{stack.url}/api/2.0/mlflow/users/{user}@example.com/sessions"

    other = login(stack, "alice")
    assert other.delete(sessions, headers=API, timeout=TIMEOUT).status_code == 403
    admin = login(stack, "admin")
    ended = admin.delete(sessions, headers=API, timeout=TIMEOUT)
    assert ended.status_code == 200 and ended.json()["revoked"] == 1, ended.text[:300]

    time.sleep(PAST_COOKIE_LIFETIME)
    mark = marker()
    r = browser.get(f"{stack.url}{SEARCH}&m={mark}", headers=API, timeout=TIMEOUT)
    assert_unauthenticated(r)
    assert "signed out" in r.json()["message"], r.text
    access_log.assert_mlflow_never_saw(mark)


def test_sign_out_everywhere(stack):
    user = new_idp_user(stack, ["mlflow"], "sess")
    laptop, phone = login(stack, user), login(stack, user)
    ended = laptop.delete(stack.url + "/api/2.0/mlflow/users/current/sessions", headers=API, timeout=TIMEOUT)
    assert ended.status_code == 200 and ended.json()["revoked"] == 2, ended.text[:300]
    time.sleep(PAST_COOKIE_LIFETIME)
    for browser in (laptop, phone):
        assert_unauthenticated(browser.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT))
