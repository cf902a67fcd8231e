"""The MLflow Python client, pointed at Envoy with an ID token, works as against MLflow."""
import json
import os
import pathlib
import subprocess
import sys
import uuid

from helpers import id_token_for

CLIENT = r"""
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


def run_client(stack, token, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=stack.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    return subprocess.run([sys.executable, "-c", CLIENT, *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=pathlib.Path(stack.base_dir))


def test_client_logs_and_reads_a_run_through_envoy(stack, access_log):
    name = f"client-{uuid.uuid4().hex[:8]}"
    offset = access_log.size()

    done = run_client(stack, id_token_for(stack.idp_url, "alice"), name)

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["experiment"] == result["experiment_id"]
    assert result["params"] == {"alpha": "0.5"}
    assert result["metrics"] == {"rmse": 0.25}

    calls = [e for e in access_log.since(offset) if "/mlflow/" in (e.get("path") or "")]
    paths = {e["path"].split("?")[0] for e in calls}
    for expected in ("/api/2.0/mlflow/experiments/create", "/api/2.0/mlflow/runs/create"):
        assert expected in paths, f"{expected} not in the access log: {sorted(paths)}"
    for e in calls:
        assert e["details"] == "via_upstream" and e["upstream"] == "mlflow", e
        assert e["user"] == "alice@example.com", e


def test_client_without_a_token_is_told_it_is_unauthenticated(stack):
    done = run_client(stack, None, f"client-{uuid.uuid4().hex[:8]}")

    assert done.returncode != 0, done.stdout
    assert "UNAUTHENTICATED" in done.stderr, done.stderr[-3000:]
