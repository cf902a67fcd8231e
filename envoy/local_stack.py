#!/usr/bin/env python3
"""Start and stop the whole stack on loopback, as real processes.

    IdP (oidc-provider-mock) -> MLflow -> policy service -> Envoy (+ the wasm filter)

One place for the demo (`make demo`, i.e. `local_stack.py demo`) and for the tests
(tests/conftest.py builds a `Stack` on free ports). Every process runs in its own
process group with its output in <base_dir>/logs/<name>.log; each start waits for a
readiness poll and fails with the log tail when the process does not come up.

Usage:
    local_stack.py demo [--base-dir DIR]    start everything, print the URL and the users,
                                            stop everything on Ctrl-C (state is kept in DIR)
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import render  # noqa: E402  (envoy/render.py, beside this file)

VENV_BIN = ROOT / ".venv" / "bin"
POLICY_SERVICE_BIN = ROOT / "target" / "release" / "policy-service"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "mlflow_edge_authz.wasm"

# The demo users the IdP knows: sub -> groups. Each gets email <sub>@example.com.
USERS = {
    "alice": ["mlflow"],
    "bob": ["mlflow"],
    "admin": ["mlflow-admin"],
    "eve": ["other"],
}
USER_GROUP = "mlflow"
ADMIN_GROUP = "mlflow-admin"
CLIENT_ID = "mlflow"
CLIENT_SECRET = "demo-secret"


class StackError(RuntimeError):
    """A part of the stack did not start (the message carries its log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, error text) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        return 0, str(e)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """One child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log: pathlib.Path, env: dict | None = None,
                 cwd: pathlib.Path | None = None):
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} start {name}: {' '.join(argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after `timeout`. Idempotent."""
        if self.popen.returncode is not None and not self._group_alive():
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; give its children (e.g. MLflow's workers) a moment too.
            deadline = time.monotonic() + wait
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._group_alive():
                return

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # Zombies left by a reaper-less PID 1 still count for killpg(0); check for a live member.
        return _group_has_live_member(self.popen.pid)


def _group_has_live_member(pgid: int) -> bool:
    proc = pathlib.Path("/proc")
    if not proc.is_dir():
        return True
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Stack:
    """The IdP, MLflow, the policy service and Envoy on 127.0.0.1.

    base_dir holds state and logs: mlflow.db, artifacts/, auth.db, secret_key,
    envoy.yaml (rendered), access.log, envoy.log and logs/<part>.log.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        listen_port: int = 8080,
        admin_port: int = 9901,
        mlflow_port: int = 5000,
        service_port: int = 8090,
        idp_port: int = 9400,
        service_env: dict[str, str] | None = None,
        filter_config: dict | None = None,
        users: dict[str, list[str]] | None = None,
        user_claims: dict[str, dict] | None = None,
        graph_groups: dict | None = None,
        idp_token_max_age: int | None = None,
        start_timeout: float = 60.0,
    ):
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.listen_port = listen_port
        self.admin_port = admin_port
        self.mlflow_port = mlflow_port
        self.service_port = service_port
        self.idp_port = idp_port
        self.service_env = dict(service_env or {})
        self.filter_overrides = dict(filter_config or {})
        self.users = dict(USERS if users is None else users)
        # More IdP users, sub -> exactly these claims (no groups claim unless given).
        self.user_claims = dict(user_claims or {})
        # When set, a Microsoft Graph stand-in (tests/graph_standin.py) serves these
        # memberships (sub -> groups, see there) and OIDC_GRAPH_API_URL points at it.
        self.graph_groups = graph_groups
        self.graph_port = free_port() if graph_groups is not None else None
        self.idp_token_max_age = idp_token_max_age
        self.start_timeout = start_timeout
        self.procs: dict[str, Proc] = {}

    @classmethod
    def on_free_ports(cls, base_dir, **kwargs) -> "Stack":
        listen, admin, mlflow, service, idp = free_ports(5)
        return cls(base_dir, listen_port=listen, admin_port=admin, mlflow_port=mlflow,
                   service_port=service, idp_port=idp, **kwargs)

    # ---- addresses -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where users and MLflow clients go: Envoy's listener."""
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def idp_url(self) -> str:
        """The IdP's issuer."""
        return f"http://127.0.0.1:{self.idp_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def graph_url(self) -> str | None:
        """The Graph stand-in's base URL (OIDC_GRAPH_API_URL), when there is one."""
        return f"http://127.0.0.1:{self.graph_port}/v1.0" if self.graph_port else None

    @property
    def access_log(self) -> pathlib.Path:
        return self.base_dir / "access.log"

    @property
    def envoy_log(self) -> pathlib.Path:
        return self.base_dir / "envoy.log"

    @property
    def envoy_config(self) -> pathlib.Path:
        return self.base_dir / "envoy.yaml"

    def log_path(self, name: str) -> pathlib.Path:
        return self.base_dir / "logs" / f"{name}.log"

    # ---- whole stack -----------------------------------------------------------------
    def start(self) -> "Stack":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # no orphans if the caller forgets (or dies of an exception)
        try:
            self.start_idp()
            if self.graph_groups is not None:
                self.start_graph_standin()
            self.start_mlflow()
            self.start_service()
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything that is running (extra IdPs too), Envoy first. Idempotent."""
        order = ("envoy", "service", "mlflow")
        for name in [*order, *(n for n in list(self.procs) if n not in order)]:
            self._stop(name)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def _check_port_free(self, name: str, port: int) -> None:
        if _port_open(port):
            raise StackError(f"{name}: port {port} on 127.0.0.1 is already in use "
                             f"(another stack still running?)")

    def _wait(self, name: str, ready, what: str, timeout: float | None = None) -> None:
        """Poll ready() until true; fail early when the process exits."""
        proc = self.procs[name]
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                self.procs.pop(name, None)
                proc.stop()
                raise StackError(
                    f"{name} exited with code {proc.popen.returncode} before it was ready "
                    f"({what}); log {proc.log}:\n{proc.tail()}")
            ok, last = ready()
            if ok:
                return
            time.sleep(0.1)
        self.procs.pop(name, None)
        proc.stop()
        raise StackError(f"{name} not ready after {timeout or self.start_timeout:.0f} s "
                         f"({what}; last answer: {last!r}); log {proc.log}:\n{proc.tail()}")

    # ---- IdP ---------------------------------------------------------------------------
    def idp_argv(self, port: int, token_max_age: int | None) -> list[str]:
        argv = [str(VENV_BIN / "oidc-provider-mock"), "-p", str(port)]
        if token_max_age is not None:
            argv += ["-e", str(token_max_age)]
        for sub, groups in self.users.items():
            claims = {"sub": sub, "email": f"{sub}@example.com", "groups": groups}
            argv += ["--user-claims", json.dumps(claims)]
        for sub, extra in self.user_claims.items():
            argv += ["--user-claims", json.dumps({**extra, "sub": sub})]
        return argv

    def start_idp(self) -> None:
        self._start_idp("idp", self.idp_port, self.idp_token_max_age)

    def _start_idp(self, name: str, port: int, token_max_age: int | None) -> None:
        self._check_port_free(name, port)
        self.procs[name] = Proc(name, self.idp_argv(port, token_max_age), self.log_path(name),
                                env={"PYTHONUNBUFFERED": "1"})
        discovery = f"http://127.0.0.1:{port}/.well-known/openid-configuration"

        def ready():
            status, body = _http_get(discovery)
            return status == 200 and '"jwks_uri"' in body, f"{status} {body[:200]}"

        self._wait(name, ready, f"GET {discovery}")

    def stop_idp(self) -> None:
        self._stop("idp")

    def restart_idp(self, token_max_age: int | None = None) -> None:
        """Restart the IdP: it makes a new RSA key, so this rotates its signing key.

        token_max_age (seconds) applies to this run only; None is the IdP's default (1 h).
        """
        self._stop("idp")
        self._start_idp("idp", self.idp_port, token_max_age)

    def start_extra_idp(self, name: str, port: int | None = None,
                        token_max_age: int | None = None) -> str:
        """Another IdP (another issuer, another key) with the same users; returns its issuer.

        Stopped by stop() or stop_extra_idp(name).
        """
        port = port or free_port()
        self._start_idp(name, port, token_max_age)
        return f"http://127.0.0.1:{port}"

    def stop_extra_idp(self, name: str) -> None:
        self._stop(name)

    # ---- Microsoft Graph stand-in (group detection tests) ------------------------------
    def start_graph_standin(self) -> None:
        """tests/graph_standin.py on graph_port, serving graph_groups (written to a file)."""
        groups_file = self.base_dir / "graph_groups.json"
        groups_file.write_text(json.dumps(self.graph_groups))
        self._check_port_free("graph", self.graph_port)
        argv = [str(VENV_BIN / "python"), str(ROOT / "tests" / "graph_standin.py"),
                "--port", str(self.graph_port), "--idp-url", self.idp_url,
                "--groups", str(groups_file)]
        self.procs["graph"] = Proc("graph", argv, self.log_path("graph"),
                                   env={"PYTHONUNBUFFERED": "1"})

        def ready():
            status, body = _http_get(f"http://127.0.0.1:{self.graph_port}/health")
            return status == 200, f"{status} {body[:200]}"

        self._wait("graph", ready, f"GET http://127.0.0.1:{self.graph_port}/health")

    # ---- MLflow ------------------------------------------------------------------------
    def start_mlflow(self) -> None:
        self._check_port_free("mlflow", self.mlflow_port)
        (self.base_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        hosts = ",".join(f"{h}:{p}" for p in (self.listen_port, self.mlflow_port)
                         for h in ("127.0.0.1", "localhost"))
        argv = [
            str(VENV_BIN / "mlflow"), "server",
            "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.base_dir / 'mlflow.db'}",
            "--artifacts-destination", str(self.base_dir / "artifacts"),
            "--serve-artifacts",
            # MLflow checks Host against a list (DNS-rebinding guard): it sees Envoy's Host.
            "--allowed-hosts", hosts,
        ]
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
        self.procs["mlflow"] = Proc("mlflow", argv, self.log_path("mlflow"), env=env,
                                    cwd=self.base_dir)

        def ready():
            status, body = _http_get(f"{self.mlflow_url}/health")
            return status == 200, f"{status} {body[:200]}"

        # A cold start migrates the SQLite schema: that takes a while.
        self._wait("mlflow", ready, f"GET {self.mlflow_url}/health",
                   timeout=max(self.start_timeout, 120.0))

    def stop_mlflow(self) -> None:
        self._stop("mlflow")

    # ---- policy service -----------------------------------------------------------------
    def secret(self, name: str) -> str:
        """A secret made once per base_dir (SECRET_KEY, AUTHZ_SHARED_KEY), so sessions
        survive restarts."""
        path = self.base_dir / name.lower()
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def service_environment(self) -> dict[str, str]:
        env = {
            "OIDC_DISCOVERY_URL": f"{self.idp_url}/.well-known/openid-configuration",
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URI": f"{self.url}/callback",
            "OIDC_USERS_DB_URI": f"sqlite:///{self.base_dir / 'auth.db'}",
            "OIDC_GROUP_NAME": USER_GROUP,
            "OIDC_ADMIN_GROUP_NAME": ADMIN_GROUP,
            "POLICY_SERVICE_ADDR": f"127.0.0.1:{self.service_port}",
            "SECRET_KEY": self.secret("SECRET_KEY"),
            "AUTHZ_SHARED_KEY": self.secret("AUTHZ_SHARED_KEY"),
            # The service resolves runs, traces and logged models to experiments here.
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            # Nothing is readable without a grant (the seed's default would be MANAGE).
            "DEFAULT_MLFLOW_PERMISSION": "NO_PERMISSIONS",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }
        if self.graph_url:
            env["OIDC_GRAPH_API_URL"] = self.graph_url
        env.update(self.service_env)
        return env

    def start_service(self) -> None:
        if not POLICY_SERVICE_BIN.exists():
            raise StackError(f"{POLICY_SERVICE_BIN} is missing: run `make build` first")
        self._check_port_free("service", self.service_port)
        self.procs["service"] = Proc("service", [str(POLICY_SERVICE_BIN)], self.log_path("service"),
                                     env=self.service_environment(), cwd=self.base_dir)

        def ready():
            status, body = _http_get(f"{self.service_url}/health")
            return status == 200, f"{status} {body[:200]}"

        self._wait("service", ready, f"GET {self.service_url}/health")

    def stop_service(self) -> None:
        self._stop("service")

    # ---- Envoy --------------------------------------------------------------------------
    def filter_settings(self) -> dict:
        """The filter's JSON settings: render.py's, with this stack's overrides on top."""
        values = {**render.DEFAULTS, **self._render_values()}
        return {**render.filter_config(values), **self.filter_overrides}

    def _render_values(self) -> dict:
        return {
            "LISTEN_PORT": str(self.listen_port),
            "ADMIN_PORT": str(self.admin_port),
            "MLFLOW_PORT": str(self.mlflow_port),
            "SERVICE_PORT": str(self.service_port),
            "IDP_PORT": str(self.idp_port),
            "ACCESS_LOG": str(self.access_log),
            "WASM": str(WASM),
            "CLIENT_ID": CLIENT_ID,
        }

    def render_envoy_config(self) -> pathlib.Path:
        values = self._render_values()
        values["FILTER_CONFIG"] = json.dumps(self.filter_settings())
        self.envoy_config.parent.mkdir(parents=True, exist_ok=True)
        self.envoy_config.write_text(render.render(values))
        return self.envoy_config

    def start_envoy(self) -> None:
        if not WASM.exists():
            raise StackError(f"{WASM} is missing: run `make build` first")
        for name, port in (("envoy", self.listen_port), ("envoy admin", self.admin_port)):
            self._check_port_free(name, port)
        config = self.render_envoy_config()
        argv = [
            str(VENV_BIN / "envoy"), "-c", str(config),
            "--concurrency", "1", "--disable-hot-restart",
            "-l", "warning", "--component-log-level", "wasm:info",
            "--log-path", str(self.envoy_log),
            # The access log is read by the tests: flush it promptly (default 10 s).
            "--file-flush-interval-msec", "100",
        ]
        # The filter reads the key from its VM environment (envoy.yaml: host_env_keys).
        self.procs["envoy"] = Proc("envoy", argv, self.log_path("envoy"), cwd=self.base_dir,
                                   env={"AUTHZ_SHARED_KEY": self.secret("AUTHZ_SHARED_KEY")})

        def ready():
            status, body = _http_get(f"{self.admin_url}/ready")
            return status == 200 and body.strip() == "LIVE", f"{status} {body[:200]}"

        def with_envoy_log():
            try:
                return "\n".join(self.envoy_log.read_text().splitlines()[-30:])
            except OSError:
                return ""

        try:
            self._wait("envoy", ready, f"GET {self.admin_url}/ready == LIVE")
        except StackError as e:
            raise StackError(f"{e}\n--- {self.envoy_log} ---\n{with_envoy_log()}") from None

    def stop_envoy(self) -> None:
        self._stop("envoy")


def show_access_token(stack: "Stack") -> None:
    """What a user without a browser session does: alice signs in once, makes an access
    token, and the MLflow client logs a run with it (HTTP Basic through Envoy)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import helpers  # the same sign-in walk and client the tests use

    env = {"MLFLOW_TRACKING_USERNAME": "alice@example.com"}
    try:
        browser = helpers.login(stack, "alice")
        made = browser.post(stack.url + "/api/2.0/mlflow/users/current/tokens", headers=helpers.API,
                            json={"name": "make demo", "expiration": 30}, timeout=30)
        made.raise_for_status()
        env["MLFLOW_TRACKING_PASSWORD"] = made.json()["token"]
        experiment = f"demo-{time.strftime('%H%M%S')}"
        done = helpers.run_mlflow_client(stack, env, experiment)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-1500:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as e:  # the demo goes on; the tests cover this path
        print(f"\n(could not show an access token in use: {e})", flush=True)
        return
    print(f"""
MLflow clients without a browser use an access token (alice made this one, valid 30 days):
  export MLFLOW_TRACKING_URI={stack.url}
  export MLFLOW_TRACKING_USERNAME={env["MLFLOW_TRACKING_USERNAME"]}
  export MLFLOW_TRACKING_PASSWORD={env["MLFLOW_TRACKING_PASSWORD"]}
The MLflow client just used it: experiment {experiment!r} (id {result["experiment_id"]}),
a run with params {result["params"]} and metrics {result["metrics"]}.
Or with an ID token from the IdP: MLFLOW_TRACKING_TOKEN=<id token>.""", flush=True)


def demo(base_dir: pathlib.Path) -> int:
    port = int(os.environ.get("DEMO_PORT", "8080"))
    stack = Stack(base_dir, listen_port=port)
    stopping = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (e.g. `cmd &`)
    print(f"Starting the stack (state and logs in {stack.base_dir}) ...", flush=True)
    try:
        stack.start()
        width = max(len(u) for u in stack.users)
        print(f"""
MLflow, behind Envoy and the sign-in filter:  {stack.url}/
  IdP (oidc-provider-mock):  {stack.idp_url}/   (pick a user on its authorize page)
  Envoy admin:               {stack.admin_url}/
  logs:                      {stack.base_dir}/logs/, {stack.access_log}

Demo users (email <user>@example.com); group '{USER_GROUP}' may sign in, '{ADMIN_GROUP}' is admin:""")
        for user, groups in stack.users.items():
            note = {ADMIN_GROUP: "admin", USER_GROUP: "user"}
            roles = [note[g] for g in groups if g in note] or ["cannot sign in"]
            print(f"  {user:<{width}}  groups {json.dumps(groups):<18} {', '.join(roles)}")
        show_access_token(stack)
        print("\nCtrl-C stops everything.", flush=True)
        while True:
            for name, proc in list(stack.procs.items()):
                if not proc.alive():
                    print(f"\n{name} exited (code {proc.popen.returncode}); log {proc.log}:\n"
                          f"{proc.tail()}", file=sys.stderr)
                    stopping = True
            if stopping:
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except StackError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("Stopped.", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="start the stack, stop it on Ctrl-C")
    d.add_argument("--base-dir", default=str(ROOT / ".demo"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(pathlib.Path(args.base_dir))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
