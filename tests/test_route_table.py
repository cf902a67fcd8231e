"""The filter's route table against the MLflow it guards: every route MLflow 3.17's
server serves (the Flask `url_map` and the FastAPI routes `mlflow server` mounts in
front of it) must be one the table knows, and a few must get the access the reference
gives them. Needs no stack: it lists MLflow's routes in a subprocess and asks the
`route_table` example (cargo builds it) about each."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Printed as JSON lines of [kind, method, rule] by a fresh interpreter, so that importing
# MLflow's server (which builds its apps at import) leaves this process alone.
LIST_ROUTES = r"""
import json, warnings
warnings.simplefilter("ignore")
import mlflow
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import create_fastapi_app

print(json.dumps(["version", mlflow.__version__, ""]))
for rule in flask_app.url_map.iter_rules():
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        print(json.dumps(["flask", method, rule.rule]))

def walk(routes, prefix=""):
    for r in routes:
        if hasattr(r, "original_router"):  # FastAPI >= 0.165: included routers
            yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
        elif getattr(r, "methods", None):
            for method in sorted(set(r.methods) - {"HEAD", "OPTIONS"}):
                yield method, prefix + r.path

for method, path in walk(create_fastapi_app().routes):
    print(json.dumps(["fastapi", method, path]))
"""

FLASK_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
FASTAPI_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def sample(kind: str, rule: str) -> str:
    """A concrete path for a rule: `<path:...>` → `1/abc/file.txt`, ints → `1`, others `x`."""
    def value(converter: str | None) -> str:
        if converter == "path":
            return "1/abc/file.txt"
        if converter in ("int", "float"):
            return "1"
        return "x"

    if kind == "flask":
        return FLASK_PARAM.sub(lambda m: value(m.group(1)), rule)
    return FASTAPI_PARAM.sub(lambda m: value(m.group(2)), rule)


@pytest.fixture(scope="module")
def mlflow_routes(tmp_path_factory) -> list[tuple[str, str, str]]:
    out = subprocess.run(
        [sys.executable, "-c", LIST_ROUTES],
        cwd=tmp_path_factory.mktemp("mlflow-routes"),
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    rows = [tuple(json.loads(line)) for line in out.splitlines() if line.startswith("[")]
    version = [r[1] for r in rows if r[0] == "version"]
    assert version and version[0].startswith("3.17"), f"MLflow {version}: the table is for 3.17"
    routes = sorted({r for r in rows if r[0] != "version"})
    assert len(routes) > 300, f"only {len(routes)} MLflow routes found"
    return routes


def classify(lines: list[str]) -> list[dict]:
    done = subprocess.run(
        ["cargo", "run", "-q", "--example", "route_table"],
        cwd=ROOT, input="\n".join(lines) + "\n",
        capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(lines), done.stderr
    return answers


@pytest.fixture(scope="module")
def table(mlflow_routes) -> dict[tuple[str, str], dict]:
    lines = [f"{method} {sample(kind, rule)}" for kind, method, rule in mlflow_routes]
    answers = classify(lines)
    return {(kind, method, rule): answer
            for (kind, method, rule), answer in zip(mlflow_routes, answers)}


def test_every_mlflow_route_is_in_the_table(table):
    unknown = [f"{method} {rule} ({kind}; sample {a['path']})"
               for (kind, method, rule), a in table.items() if a["route"] == "unknown"]
    refused = [f"{method} {rule} ({kind}): {a['plan'].get('error')}"
               for (kind, method, rule), a in table.items() if a["access"] == "error"]
    admin_only = sum(1 for a in table.values() if a["access"] == "admin_only")
    print(f"\nMLflow routes: {len(table)}; classified: {len(table) - len(unknown)}; "
          f"admin only: {admin_only}; authenticated: "
          f"{sum(1 for a in table.values() if a['access'] == 'authenticated')}; "
          f"resources: {sum(1 for a in table.values() if a['access'] == 'resources')}")
    assert not unknown, "MLflow routes the filter's table does not know:\n" + "\n".join(unknown)
    assert not refused, "MLflow routes whose sample path the filter refuses:\n" + "\n".join(refused)


# Path parts of the families in scope: none of their routes may be admins-only.
IN_SCOPE = re.compile(
    r"/(runs|experiments|registered-models|model-versions|logged-models|metrics|artifacts)/"
    r"|/mlflow/traces|mlflow-artifacts|^/get-artifact|^/model-versions/get-artifact"
    r"|/(get-trace-artifact|upload-artifact)$"
)


def test_routes_in_scope_are_not_admins_only(table):
    wrong = [f"{method} {rule}: {a['access']}"
             for (kind, method, rule), a in table.items()
             if IN_SCOPE.search(rule) and a["access"] == "admin_only"]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("method,path,access", [
    ("GET", "/api/2.0/mlflow/runs/get", "resources"),
    ("GET", "/ajax-api/2.0/mlflow/runs/get", "resources"),
    ("POST", "/api/2.0/mlflow/runs/log-metric", "resources"),
    ("POST", "/api/2.0/mlflow/experiments/create", "authenticated"),
    ("POST", "/api/2.0/mlflow/registered-models/create", "authenticated"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete", "resources"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/file.txt", "resources"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", "resources"),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact", "resources"),
    ("GET", "/get-artifact", "resources"),
    ("GET", "/", "authenticated"),
    ("GET", "/health", "authenticated"),
    ("GET", "/ajax-api/3.0/mlflow/server-info", "authenticated"),
    ("POST", "/api/2.0/mlflow/webhooks", "admin_only"),
    ("DELETE", "/api/2.0/mlflow/webhooks/x", "admin_only"),
    ("POST", "/api/3.0/mlflow/scorers/register", "admin_only"),
    ("GET", "/api/3.0/mlflow/gateway/endpoints/list", "admin_only"),
    ("POST", "/gateway/openai/v1/chat/completions", "admin_only"),
    ("POST", "/v1/traces", "admin_only"),
    ("POST", "/ajax-api/3.0/jobs/", "admin_only"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/message", "admin_only"),
    ("GET", "/api/3.0/mlflow/mcp-servers", "admin_only"),
    ("GET", "/api/3.0/mlflow/workspaces", "admin_only"),
    ("POST", "/graphql", "resources"),
    ("GET", "/graphql", "resources"),
    ("PUT", "/graphql", "admin_only"),
    ("GET", "/api/2.0/mlflow/users/current", "authenticated"),
    ("GET", "/api/2.0/mlflow/no-such-route", "admin_only"),
])
def test_known_routes_get_the_expected_access(method, path, access):
    (answer,) = classify([f"{method} {path}"])
    assert answer["access"] == access, answer


def test_streamed_uploads_are_never_buffered(table):
    for (kind, method, rule), a in table.items():
        if method == "PUT" and "mlflow-artifacts/artifacts" in rule:
            assert a["reads_body"] is False, a
    (answer,) = classify(["POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=r1&path=a"])
    assert answer["reads_body"] is False
    assert answer["plan"]["detail"] == [{"target": {"type": "run", "id": "r1"}, "need": "EDIT"}]
