"""Groups from UserInfo when the ID token has none (OIDC_USERINFO_GROUPS), end to end.

The IdP sits behind tests/userinfo_standin.py, which adds groups to its UserInfo answers
only: a user admitted here was admitted on what UserInfo said. A stack of its own
(module-scoped): only the policy service talks to the front; Envoy's filter keeps the IdP.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import ROOT
from helpers import login, sign_in
from local_stack import VENV_BIN, Proc, Stack, _http_get, free_port
from test_group_detection import recorded_groups, status

# The ID tokens of these users carry no groups; the front's UserInfo adds them.
USERINFO_CLAIMS = {
    "uma": {"groups": ["mlflow", "data-science"]},
    "ugo": {"groups": ["sales"]},
    # A UserInfo answer about somebody else: it must not be believed.
    "sam": {"groups": ["mlflow"], "sub": "somebody-else"},
}
USER_CLAIMS = {sub: {"email": f"{sub}@example.com"} for sub in [*USERINFO_CLAIMS, "una"]}


class UserInfoStack(Stack):
    """A stack whose policy service sees the IdP through the UserInfo front."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.front_port = free_port()

    @property
    def idp_url(self) -> str:
        # What the service is configured with and what browsers are sent to.
        return f"http://127.0.0.1:{self.front_port}"

    def start_idp(self) -> None:
        self._start_idp("idp", self.idp_port, self.idp_token_max_age)
        claims = self.base_dir / "userinfo_claims.json"
        claims.write_text(json.dumps(USERINFO_CLAIMS))
        argv = [str(VENV_BIN / "python"), str(ROOT / "tests" / "userinfo_standin.py"), "--port",
                str(self.front_port), "--idp-url", f"http://127.0.0.1:{self.idp_port}", "--claims", str(claims)]
        self.procs["front"] = Proc("front", argv, self.log_path("front"), env={"PYTHONUNBUFFERED": "1"})

        def ready():
            code, body = _http_get(f"{self.idp_url}/.well-known/openid-configuration")
            return code == 200 and self.idp_url in body, f"{code} {body[:200]}"

        self._wait("front", ready, f"GET {self.idp_url}/.well-known/openid-configuration")


@pytest.fixture(scope="module")
def userinfo_stack():
    base = ROOT / ".test-run" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-userinfo"
    s = UserInfoStack.on_free_ports(base, users={}, user_claims=USER_CLAIMS,
                                    service_env={"OIDC_USERINFO_GROUPS": "true"})
    s.start()
    try:
        yield s
    finally:
        s.stop()
        print(f"\nuserinfo stack logs: {base}")


def test_groups_from_userinfo_admit_a_user_whose_id_token_has_none(userinfo_stack):
    browser = login(userinfo_stack, "uma")
    assert status(userinfo_stack, browser)["username"] == "uma@example.com"
    assert recorded_groups(userinfo_stack, "uma@example.com") == ["data-science", "mlflow"]


def test_userinfo_groups_outside_the_allowed_ones_are_refused(userinfo_stack):
    assert sign_in(userinfo_stack, "ugo").callback.status_code == 403
    # No groups anywhere: refused too.
    assert sign_in(userinfo_stack, "una").callback.status_code == 403


def test_a_userinfo_answer_about_another_subject_is_refused(userinfo_stack):
    callback = sign_in(userinfo_stack, "sam").callback
    assert callback.status_code >= 400, callback.text[:300]
    assert "somebody-else" in callback.text and "not the ID token" in callback.text, callback.text[:300]
    assert not callback.cookies.get("mlflow_session")


def test_without_oidc_userinfo_groups_the_id_token_alone_decides(userinfo_stack):
    saved = dict(userinfo_stack.service_env)
    userinfo_stack.stop_service()
    userinfo_stack.service_env = {**saved, "OIDC_USERINFO_GROUPS": "false"}
    userinfo_stack.start_service()
    try:
        assert sign_in(userinfo_stack, "uma").callback.status_code == 403
    finally:
        userinfo_stack.stop_service()
        userinfo_stack.service_env = saved
        userinfo_stack.start_service()
