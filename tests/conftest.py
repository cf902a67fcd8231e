"""One real stack for the whole run: IdP, MLflow, the policy service and Envoy with the
filter, on free loopback ports, under .test-run/<timestamp>/ (logs kept there)."""
from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from local_stack import Stack  # noqa: E402
from helpers import AccessLog  # noqa: E402

# Short session cookies, so renewal and expiry happen within a test.
SESSION_TOKEN_TTL_SECONDS = 5
# The filter's settings for tests: a tight clock and a fast JWKS refetch.
CLOCK_SKEW_SECONDS = 1
JWKS_REFETCH_INTERVAL_SECONDS = 1.0
# How long the filter reuses the policy service's answer about an access token: the
# bound on how long a revoked token keeps working.
ACCESS_TOKEN_CACHE_SECONDS = 2
# The sign-in button's label (OIDC_PROVIDER_DISPLAY_NAME).
PROVIDER_DISPLAY_NAME = "Sign in with the test IdP"


KEEP_RUNS = 5


def prune_old_runs(runs: pathlib.Path) -> None:
    """Keep the logs of the last few runs only."""
    old = sorted(p for p in runs.glob("*") if p.is_dir())[:-KEEP_RUNS]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


@pytest.fixture(scope="session")
def stack():
    base = ROOT / ".test-run" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    prune_old_runs(base.parent)
    s = Stack.on_free_ports(
        base,
        service_env={"SESSION_TOKEN_TTL_SECONDS": str(SESSION_TOKEN_TTL_SECONDS),
                     "OIDC_PROVIDER_DISPLAY_NAME": PROVIDER_DISPLAY_NAME},
        filter_config={
            "clock_skew_seconds": CLOCK_SKEW_SECONDS,
            "jwks_refetch_interval_ms": int(JWKS_REFETCH_INTERVAL_SECONDS * 1000),
            "access_token_cache_seconds": ACCESS_TOKEN_CACHE_SECONDS,
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()
        print(f"\nstack logs: {base}")


@pytest.fixture(scope="session")
def access_log(stack) -> AccessLog:
    return AccessLog(stack.access_log)


def wait_past_jwks_refetch_limit() -> None:
    """The filter refetches the IdP's keys at most once per interval: wait one out, so the
    next unknown key gets its refetch."""
    time.sleep(JWKS_REFETCH_INTERVAL_SECONDS + 0.5)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "restarts_idp: restarts the IdP (new signing key); such tests run last")


def pytest_collection_modifyitems(config, items):
    # A restarted IdP has a new key: run those tests after all others, so a failure
    # there cannot turn into confusing failures elsewhere.
    items.sort(key=lambda item: item.get_closest_marker("restarts_idp") is not None)
