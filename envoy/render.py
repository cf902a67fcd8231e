#!/usr/bin/env python3
"""Fill envoy/envoy.yaml's ${NAME} placeholders; print the result.

Usage: render.py [NAME=VALUE ...] > out.yaml
Every placeholder has a default (the `make demo` ports). FILTER_CONFIG is the
filter's JSON settings, built from the ports unless given whole.
"""
import json
import pathlib
import string
import sys

HERE = pathlib.Path(__file__).resolve().parent

DEFAULTS = {
    "LISTEN_PORT": "8080",
    "ADMIN_PORT": "9901",
    "MLFLOW_PORT": "5000",
    "SERVICE_PORT": "8090",
    "IDP_PORT": "9400",
    "CALLBACK_PATH": "/callback",
    "ACCESS_LOG": "/dev/null",
    "WASM": str(HERE.parent / "target/wasm32-wasip1/release/mlflow_edge_authz.wasm"),
    "CLIENT_ID": "mlflow",
}


def filter_config(v: dict) -> dict:
    """The filter's settings for a local stack (see README, 'Filter settings')."""
    return {
        "oidc_discovery_url": f"http://127.0.0.1:{v['IDP_PORT']}/.well-known/openid-configuration",
        "oidc_audience": [v["CLIENT_ID"]],
        "idp_cluster": "idp",
        "policy_service_cluster": "policy-service",
        "public_paths": ["/oidc/", v["CALLBACK_PATH"], "/logout"],
    }


def render(overrides: dict, template: str = "envoy.yaml") -> str:
    values = {**DEFAULTS, **overrides}
    if "FILTER_CONFIG" not in values:
        values["FILTER_CONFIG"] = json.dumps(filter_config(values))
    text = (HERE / template).read_text()
    return string.Template(text).substitute(values)


if __name__ == "__main__":
    pairs = dict(arg.split("=", 1) for arg in sys.argv[1:])
    sys.stdout.write(render(pairs))
