"""An operator's mistakes in the filter's settings stop Envoy from loading it, with a
message that names the field; nothing starts with a half-understood configuration."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))

import render  # noqa: E402

ENVOY = ROOT / ".venv/bin/envoy"
GOOD = {
    "oidc_discovery_url": "http://127.0.0.1:9400/.well-known/openid-configuration",
    "oidc_audience": ["mlflow"],
}


def validate(tmp_path: pathlib.Path, settings: dict) -> subprocess.CompletedProcess:
    config = tmp_path / "envoy.yaml"
    config.write_text(render.render({"FILTER_CONFIG": json.dumps(settings)}))
    return subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_good_settings_load(tmp_path):
    done = validate(tmp_path, GOOD)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("field, value, says", [
    ("oidc_audiences", ["mlflow"], "unknown field `oidc_audiences`"),
    ("allowed_algorithms", ["RS256", "HS256"], "allowed_algorithms"),
    ("allowed_algorithms", ["none"], "allowed_algorithms"),
    ("clock_skew_seconds", 3600, "clock_skew_seconds"),
    ("oidc_discovery_url", "idp.example/.well-known/openid-configuration", "oidc_discovery_url"),
    ("identity_header", "x user", "identity_header"),
])
def test_a_bad_field_refuses_the_configuration_and_is_named(tmp_path, field, value, says):
    done = validate(tmp_path, {**GOOD, field: value})
    assert done.returncode != 0, f"envoy accepted {field}={value!r}"
    assert says in done.stderr + done.stdout, (done.stderr + done.stdout)[-2000:]


def test_missing_mandatory_field_is_named(tmp_path):
    done = validate(tmp_path, {"oidc_audience": ["mlflow"]})
    assert done.returncode != 0
    assert "oidc_discovery_url" in done.stderr + done.stdout
