"""Where groups come from, end to end: Microsoft Entra ID group detection against a
local Microsoft Graph stand-in (tests/graph_standin.py), OIDC_GROUP_NAME_PATTERN, and a
nested groups claim (OIDC_GROUPS_ATTRIBUTE=realm_access.roles).

A second stack of its own (module-scoped), so the main stack keeps claim-based groups.
"""
from __future__ import annotations

import os
import sqlite3
import time

import pytest
import requests

from conftest import ROOT
from helpers import API, SESSION_COOKIE, TIMEOUT, login, sign_in
from local_stack import Stack

ENTRA = "mlflow_oidc_auth.plugins.group_detection_microsoft_entra_id"

# carol: 250 memberships over 3 Graph pages (100 a page), `mlflow` only on page 3, and
# one name twice; her ID token has no groups claim at all.
CAROL_GROUPS = ([f"team-{i:03d}" for i in range(200)] + ["mlflow", "team-000"]
                + [f"team-{i:03d}" for i in range(200, 248)])
GRAPH_GROUPS = {
    "carol": CAROL_GROUPS,
    "dave": ["sales", "support", "MLflow", "mlflow_x"],  # near misses only
    "frank": {"status": 500, "page": 1, "groups": ["mlflow"] * 150},
    "pat": ["other", "mlflow-team-a"],
    "grace": ["x"] * 120 + ["mlflow-admin"],
}
# The IdP's users for this stack: e-mail only (no groups claim), except kim's nested roles.
USER_CLAIMS = {sub: {"email": f"{sub}@example.com"} for sub in GRAPH_GROUPS}
USER_CLAIMS["kim"] = {"email": "kim@example.com",
                      "realm_access": {"roles": ["offline_access", "mlflow"]}}


@pytest.fixture(scope="module")
def graph_stack():
    base = ROOT / ".test-run" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-groups"
    s = Stack.on_free_ports(
        base,
        users={},
        user_claims=USER_CLAIMS,
        graph_groups=GRAPH_GROUPS,
        service_env={
            "OIDC_GROUP_DETECTION_PLUGIN": ENTRA,
            "OIDC_GROUP_NAME_PATTERN": "mlflow-*",
            "OIDC_HTTP_TIMEOUT_SECONDS": "5",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        print(f"\ngroup-detection stack logs: {base}")


def status(stack, browser: requests.Session) -> dict:
    r = browser.get(stack.url + "/oidc/auth/status", headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    return r.json()


def recorded_groups(stack, username: str) -> list[str]:
    with sqlite3.connect(stack.base_dir / "auth.db") as db:
        rows = db.execute(
            "SELECT g.group_name FROM groups g JOIN user_groups ug ON ug.group_id = g.id "
            "JOIN users u ON u.id = ug.user_id WHERE u.username = ? ORDER BY g.group_name",
            (username,)).fetchall()
    return [r[0] for r in rows]


def test_groups_from_every_graph_page_admit_a_user_without_a_groups_claim(graph_stack):
    browser = login(graph_stack, "carol")

    assert status(graph_stack, browser) == {
        "authenticated": True, "username": "carol@example.com", "is_admin": False}
    r = browser.get(graph_stack.url + "/ajax-api/2.0/mlflow/experiments/search",
                    params={"max_results": 1}, headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    # All 250 distinct memberships were synchronised, not only the admitting one.
    groups = recorded_groups(graph_stack, "carol@example.com")
    assert len(groups) == 249 and "mlflow" in groups, groups[:5]
    # Three pages were fetched (the stand-in's log names each).
    log = graph_stack.log_path("graph").read_text()
    for page in ("/v1.0/me/memberOf ", "$skiptoken=1", "$skiptoken=2"):
        assert page in log, log[-2000:]


def test_a_user_whose_graph_groups_are_not_allowed_is_refused(graph_stack):
    attempt = sign_in(graph_stack, "dave")

    assert attempt.callback.status_code == 403, attempt.callback.text[:500]
    assert "dave@example.com is not in an allowed group" in attempt.callback.text
    assert not attempt.browser.cookies.get(SESSION_COOKIE)


def test_a_graph_failure_refuses_the_sign_in_with_the_reason(graph_stack):
    attempt = sign_in(graph_stack, "frank")

    assert attempt.callback.status_code == 502, attempt.callback.text[:500]
    text = attempt.callback.text
    assert "group detection through Microsoft Graph failed" in text, text[:800]
    assert "500" in text and "$skiptoken=1" in text, text[:800]
    assert not attempt.browser.cookies.get(SESSION_COOKIE)
    again = attempt.browser.get(graph_stack.url + "/", allow_redirects=False, timeout=TIMEOUT)
    assert again.status_code == 302 and "/oidc/login" in again.headers["Location"]


def test_a_group_name_pattern_admits_but_not_as_admin(graph_stack):
    browser = login(graph_stack, "pat")

    assert status(graph_stack, browser) == {
        "authenticated": True, "username": "pat@example.com", "is_admin": False}
    assert recorded_groups(graph_stack, "pat@example.com") == ["mlflow-team-a", "other"]


def test_an_admin_group_from_graph_makes_an_admin(graph_stack):
    browser = login(graph_stack, "grace")

    assert status(graph_stack, browser)["is_admin"] is True


def test_a_nested_groups_claim(graph_stack):
    """The same stack, its policy service restarted with claim-based groups read at
    realm_access.roles (Keycloak's shape)."""
    saved = dict(graph_stack.service_env)
    graph_stack.stop_service()
    graph_stack.service_env = {**saved, "OIDC_GROUPS_ATTRIBUTE": "realm_access.roles"}
    del graph_stack.service_env["OIDC_GROUP_DETECTION_PLUGIN"]
    graph_stack.start_service()
    try:
        browser = login(graph_stack, "kim")
        assert status(graph_stack, browser)["username"] == "kim@example.com"
        assert recorded_groups(graph_stack, "kim@example.com") == ["mlflow", "offline_access"]
        # carol has no groups claim: without Graph she is refused.
        assert sign_in(graph_stack, "carol").callback.status_code == 403
    finally:
        graph_stack.stop_service()
        graph_stack.service_env = saved
        graph_stack.start_service()
