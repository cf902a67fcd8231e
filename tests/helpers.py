"""What the tests do as users: sign in like a browser, get ID tokens from the IdP,
forge bad tokens, and read what Envoy saw (access log, admin stats)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time
import urllib.parse as up
import uuid
from dataclasses import dataclass

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SESSION_COOKIE = "mlflow_session"
IDENTITY_HEADER = "x-forwarded-user"
# What a browser sends when the user types a URL or follows a link.
NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) mlflow-edge-tests",
}
# What MLflow's UI (and any API client) sends for data.
API = {"Accept": "application/json"}
TIMEOUT = 30


def marker() -> str:
    """A unique query string value, to find one request in the access log."""
    return f"probe-{uuid.uuid4().hex[:12]}"


# ---- browser sign-in ---------------------------------------------------------------------
@dataclass
class SignIn:
    """A browser's walk through the sign-in, step by step."""

    browser: requests.Session
    login_url: str              # where Envoy sent the browser (Location of the first 302)
    authorize_url: str          # the IdP page the policy service sent the browser to
    callback: requests.Response  # the policy service's answer on /callback


def sign_in(stack, user: str, path: str = "/") -> SignIn:
    """Open `path` in a fresh browser, get sent to sign-in, pick `user` at the IdP.

    Stops after /callback (not following its redirect) and returns every step, so a
    test can look at the callback's answer. Asserts only what must hold for any user.
    """
    browser = requests.Session()
    browser.headers.update(NAVIGATION)
    first = browser.get(stack.url + path, allow_redirects=False, timeout=TIMEOUT)
    assert first.status_code == 302, f"GET {path}: expected a redirect to sign-in, got {first.status_code} {first.text[:300]}"
    login_url = up.urljoin(stack.url + path, first.headers["Location"])

    to_idp = browser.get(login_url, allow_redirects=False, timeout=TIMEOUT)
    assert to_idp.status_code in (302, 303), f"GET {login_url}: {to_idp.status_code} {to_idp.text[:300]}"
    authorize_url = up.urljoin(login_url, to_idp.headers["Location"])
    assert authorize_url.startswith(stack.idp_url + "/"), f"sign-in sent the browser to {authorize_url}, not the IdP"

    page = browser.get(authorize_url, allow_redirects=False, timeout=TIMEOUT)
    assert page.status_code == 200 and "<form" in page.text, f"IdP authorize page: {page.status_code} {page.text[:300]}"
    # The IdP's form posts `sub` back to the same URL.
    back = browser.post(authorize_url, data={"sub": user}, allow_redirects=False, timeout=TIMEOUT)
    assert back.status_code in (302, 303), f"IdP answered {back.status_code} {back.text[:300]}"
    callback_url = up.urljoin(authorize_url, back.headers["Location"])
    assert callback_url.startswith(stack.url + "/callback?"), f"IdP sent the browser to {callback_url}"

    callback = browser.get(callback_url, allow_redirects=False, timeout=TIMEOUT)
    return SignIn(browser, login_url, authorize_url, callback)


def login(stack, user: str, path: str = "/") -> requests.Session:
    """A browser signed in as `user` (who must be allowed in), back on `path`."""
    s = sign_in(stack, user, path)
    cb = s.callback
    assert cb.status_code in (302, 303), f"/callback for {user}: {cb.status_code} {cb.text[:500]}"
    assert cb.headers["Location"] in (path, stack.url + path), f"/callback sent {user} to {cb.headers['Location']}, not {path}"
    assert s.browser.cookies.get(SESSION_COOKIE), f"/callback set no {SESSION_COOKIE} cookie: {cb.headers}"
    return s.browser


def session_cookie(browser: requests.Session) -> str:
    value = browser.cookies.get(SESSION_COOKIE)
    assert value, f"the browser has no {SESSION_COOKIE} cookie"
    return value


def with_cookie(value: str) -> dict:
    """Headers that present exactly this session cookie (for replaying old cookies)."""
    return {**API, "Cookie": f"{SESSION_COOKIE}={value}"}


def set_cookie_value(resp: requests.Response, name: str = SESSION_COOKIE) -> str | None:
    """The value a response's Set-Cookie gives `name`, if it sets it."""
    for c in resp.raw.headers.getlist("Set-Cookie") if resp.raw is not None else []:
        k, _, rest = c.partition("=")
        if k.strip() == name:
            return rest.split(";", 1)[0]
    return resp.cookies.get(name)


# ---- tokens ----------------------------------------------------------------------------
def id_token_for(idp_url: str, user: str, client_id: str = "mlflow",
                 client_secret: str = "demo-secret") -> str:
    """An ID token for `user`, by the authorization-code flow straight against the IdP."""
    conf = requests.get(f"{idp_url}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    s = requests.Session()
    redirect_uri = "http://127.0.0.1:1/cb"
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": "openid email profile", "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
    }
    page = s.get(conf["authorization_endpoint"], params=params, timeout=TIMEOUT)
    assert page.status_code == 200, page.text[:300]
    back = s.post(page.url, data={"sub": user}, allow_redirects=False, timeout=TIMEOUT)
    assert back.status_code in (302, 303), back.text[:300]
    query = up.parse_qs(up.urlsplit(back.headers["Location"]).query)
    assert query.get("state") == [params["state"]]
    token = s.post(conf["token_endpoint"], timeout=TIMEOUT, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
        "client_id": client_id, "client_secret": client_secret,
    })
    assert token.status_code == 200, token.text[:300]
    return token.json()["id_token"]


def bearer(token: str) -> dict:
    return {**API, "Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def with_alg_none(token: str) -> str:
    """The token's claims under `alg: none` with an empty signature."""
    payload = token.split(".")[1]
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{payload}."


def idp_public_key_pem(idp_url: str) -> tuple[bytes, str | None]:
    """The IdP's (first) RSA public key as PEM, and its kid."""
    jwk = requests.get(f"{idp_url}/jwks", timeout=TIMEOUT).json()["keys"][0]
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, jwk.get("kid")


def hs256_with_public_key(token: str, idp_url: str) -> str:
    """The algorithm-confusion attack: the claims signed HS256 with the IdP's public key
    PEM as the HMAC secret (a verifier that trusts the token's `alg` would accept it)."""
    pem, kid = idp_public_key_pem(idp_url)
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64url_json(header)}.{token.split('.')[1]}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def signed_with_own_key(token: str, kid: str | None = None) -> str:
    """The token's claims re-signed RS256 with a fresh key of ours, under an unknown kid."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = kid or f"not-the-idps-{uuid.uuid4().hex[:8]}"
    return jwt.encode(claims_of(token), key, algorithm="RS256", headers={"kid": kid})


# ---- what Envoy saw ----------------------------------------------------------------------
class AccessLog:
    """Envoy's JSON access log: one line per request, with `details` == "via_upstream"
    when MLflow or the service answered, anything else when Envoy/the filter did.
    (`upstream` names the route's cluster even for a local reply: it does not say
    whether the request was forwarded.)"""

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line being written right now
        return out

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, offset: int, settle: float = 0.5) -> list[dict]:
        """Entries written after byte `offset` (from size() earlier), once Envoy has
        flushed what it had (it flushes every 100 ms in the stack)."""
        time.sleep(settle)
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return [json.loads(line) for line in text.splitlines() if line.strip().endswith("}")]

    def wait_for(self, mark: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """The entries whose path contains `mark`, once at least `count` were written."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.entries() if mark in (e.get("path") or "")]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"no access-log line for {mark} after {timeout} s"
                return found

            time.sleep(0.1)

    def assert_mlflow_never_saw(self, mark: str) -> dict:
        """The request(s) marked `mark` were answered by Envoy itself, not forwarded."""
        entries = self.wait_for(mark)
        for e in entries:
            assert e.get("details") != "via_upstream", f"MLflow saw the request: {e}"
        return entries[-1]

    def assert_mlflow_answered(self, mark: str) -> dict:
        entries = self.wait_for(mark)
        e = entries[-1]
        assert e.get("details") == "via_upstream" and e.get("upstream") == "mlflow", \
            f"MLflow did not answer the request: {e}"
        return e


def wasm_stats(stack) -> dict[str, int]:
    """Envoy's counters and gauges whose names contain 'wasm' (the filter's own included)."""
    text = requests.get(f"{stack.admin_url}/stats", params={"filter": "wasm"}, timeout=TIMEOUT).text
    out = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name.strip()] = int(value)
    return out


def counters_named(stats: dict[str, int], part: str) -> dict[str, int]:
    return {k: v for k, v in stats.items() if part in k}


# ---- what a refusal looks like -----------------------------------------------------------
def assert_unauthenticated(resp: requests.Response) -> dict:
    """401 in MLflow's error shape with a WWW-Authenticate challenge."""
    assert resp.status_code == 401, f"expected 401, got {resp.status_code}: {resp.text[:300]}"
    assert "WWW-Authenticate" in resp.headers, f"401 without WWW-Authenticate: {dict(resp.headers)}"
    body = resp.json()
    assert body.get("error_code") == "UNAUTHENTICATED", body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


# ---- the MLflow Python client ------------------------------------------------------------
MLFLOW_CLIENT = r"""
import json, sys
from mlflow import MlflowClient
client = MlflowClient()
name = sys.argv[1]
experiment_id = client.create_experiment(name)
run = client.create_run(experiment_id)
client.log_param(run.info.run_id, "alpha", "0.5")
client.log_metric(run.info.run_id, "rmse", 0.25)
client.set_terminated(run.info.run_id)
back = client.get_run(run.info.run_id)
print(json.dumps({
    "experiment": client.get_experiment_by_name(name).experiment_id,
    "experiment_id": experiment_id,
    "params": back.data.params,
    "metrics": back.data.metrics,
}))
"""


def run_mlflow_client(stack, env: dict, *args) -> subprocess.CompletedProcess:
    """The MLflow client in its own process (it reads MLFLOW_* at import), pointed at
    Envoy, with `env` for its credentials: it creates an experiment named args[0] and
    logs a run, then reads them back (JSON on the last line of stdout)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full.update(MLFLOW_TRACKING_URI=stack.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **env)
    return subprocess.run([sys.executable, "-c", MLFLOW_CLIENT, *args], env=full, capture_output=True,
                          text=True, timeout=120, cwd=pathlib.Path(stack.base_dir))


# ---- users at the IdP --------------------------------------------------------------------
def set_idp_user(stack, sub: str, groups: list[str]) -> None:
    """What an IdP admin does: create or change a user (the test IdP's own API)."""
    r = requests.put(f"{stack.idp_url}/users/{sub}", json={"email": f"{sub}@example.com", "groups": groups},
                     timeout=TIMEOUT)
    assert r.status_code in (200, 204), r.text[:300]


def new_idp_user(stack, groups: list[str], prefix: str = "user") -> str:
    """A new IdP user that no other test signs in as."""
    sub = f"{prefix}-{uuid.uuid4().hex[:6]}"
    set_idp_user(stack, sub, groups)
    return sub


# ---- permissions ---------------------------------------------------------------------------
PERMISSIONS_API = "/api/2.0/mlflow/permissions"


def grant(stack, browser, principal: str, resource: str, permission: str, *, group: bool = False,
          kind: str = "experiments") -> None:
    """What an admin or a resource manager does: give `principal` (a user, or a group when
    `group`) `permission` on `resource` (an experiment id, a registered model or prompt name)."""
    who = "groups" if group else "users"
    url = f"{stack.url}{PERMISSIONS_API}/{who}/{up.quote(principal, safe='')}/{kind}/{up.quote(resource, safe='')}"
    r = browser.post(url, json={"permission": permission}, headers=API, timeout=TIMEOUT)
    if r.status_code == 409:
        r = browser.patch(url, json={"permission": permission}, headers=API, timeout=TIMEOUT)
    assert r.status_code in (200, 201), f"grant {permission} on {kind}/{resource} to {principal}: {r.status_code} {r.text[:300]}"


def revoke(stack, browser, principal: str, resource: str, *, group: bool = False,
           kind: str = "experiments") -> None:
    who = "groups" if group else "users"
    url = f"{stack.url}{PERMISSIONS_API}/{who}/{up.quote(principal, safe='')}/{kind}/{up.quote(resource, safe='')}"
    r = browser.delete(url, headers=API, timeout=TIMEOUT)
    assert r.status_code == 200, f"revoke on {kind}/{resource} from {principal}: {r.status_code} {r.text[:300]}"


def pattern_grant(stack, browser, principal: str, regex: str, priority: int, permission: str, *,
                  group: bool = False, kind: str = "experiment-patterns") -> int:
    who = "groups" if group else "users"
    r = browser.post(f"{stack.url}{PERMISSIONS_API}/{who}/{up.quote(principal, safe='')}/{kind}",
                     json={"regex": regex, "priority": priority, "permission": permission},
                     headers=API, timeout=TIMEOUT)
    assert r.status_code in (200, 201), f"pattern grant {regex!r}: {r.status_code} {r.text[:300]}"
    return r.json().get("id")


def access_token(stack, browser, name: str | None = None) -> str:
    """A personal access token made by the signed-in `browser` (for the MLflow client)."""
    r = browser.post(stack.url + "/api/2.0/mlflow/users/current/tokens",
                     json={"name": name or f"t-{uuid.uuid4().hex[:8]}"}, headers=API, timeout=TIMEOUT)
    assert r.status_code == 201, r.text[:300]
    return r.json()["token"]


def client_env(username: str, token: str) -> dict:
    """The MLflow client's credentials: a username and an access token."""
    return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": token}


def run_client_script(stack, env: dict, script: str, *args) -> dict:
    """Runs `script` with the MLflow client pointed at Envoy; returns the JSON it prints last."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full.update(MLFLOW_TRACKING_URI=stack.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **env)
    done = subprocess.run([sys.executable, "-c", script, *args], env=full, capture_output=True,
                          text=True, timeout=300, cwd=pathlib.Path(stack.base_dir))
    assert done.returncode == 0, f"client script failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the policy service under other settings ------------------------------------------------
class service_settings:
    """`with service_settings(stack, NAME=value, ...)`: the policy service restarted with
    these settings on top of its own, and restarted as it was afterwards."""

    def __init__(self, stack, **env: str):
        self.stack, self.env = stack, env

    def __enter__(self):
        self.saved = dict(self.stack.service_env)
        self.stack.stop_service()
        self.stack.service_env = {**self.saved, **self.env}
        self.stack.start_service()
        return self.stack

    def __exit__(self, *exc):
        self.stack.stop_service()
        self.stack.service_env = self.saved
        self.stack.start_service()
