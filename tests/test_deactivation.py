"""An admin deactivates a user: the user cannot sign in, their browser session ends
within the cookie's lifetime and their access tokens stop working within the filter's
cache bound; reactivated, they sign in again."""
import base64
import time

import requests

from conftest import ACCESS_TOKEN_CACHE_SECONDS, CLOCK_SKEW_SECONDS, SESSION_TOKEN_TTL_SECONDS
from helpers import API, TIMEOUT, assert_unauthenticated, login, marker, new_idp_user, sign_in

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
PAST_BOTH_BOUNDS = max(SESSION_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS + 1, ACCESS_TOKEN_CACHE_SECONDS + 1)


def test_a_deactivated_user_is_out_within_the_bounds_and_can_come_back(stack, access_log):
    user = new_idp_user(stack, ["mlflow"], "dora")
    browser = login(stack, user)
    made = browser.post(stack.url + "/api/2.0/mlflow/users/current/tokens", json={"name": "ci"}, headers=API,
                        timeout=TIMEOUT)
    assert made.status_code == 201, made.text[:300]
    basic = {**API, "Authorization": "Basic " + base64.b64encode(
        f"{user}@example.com:{made.json()['token']}".encode()).decode()}
    assert requests.get(stack.url + SEARCH, headers=basic, timeout=TIMEOUT).status_code == 200
    active = f"{stack.url}/api/2.0/mlflow/users/{user}@example.com/active"

    assert login(stack, "alice").patch(active, json={"active": False}, headers=API, timeout=TIMEOUT).status_code == 403
    admin = login(stack, "admin")
    done = admin.patch(active, json={"active": False}, headers=API, timeout=TIMEOUT)
    assert done.status_code == 200, done.text[:300]
    assert done.json()["sessions_revoked"] == 1 and done.json()["tokens_deleted"] == 1

    time.sleep(PAST_BOTH_BOUNDS)
    for headers, session in ((API, browser), (basic, requests)):
        mark = marker()
        assert_unauthenticated(session.get(f"{stack.url}{SEARCH}&m={mark}", headers=headers, timeout=TIMEOUT))
        access_log.assert_mlflow_never_saw(mark)
    refused = sign_in(stack, user)
    assert refused.callback.status_code == 403 and "deactivated" in refused.callback.text, refused.callback.text[:300]

    assert admin.patch(active, json={"active": True}, headers=API, timeout=TIMEOUT).status_code == 200
    again = login(stack, user)
    assert again.get(stack.url + SEARCH, headers=API, timeout=TIMEOUT).status_code == 200
