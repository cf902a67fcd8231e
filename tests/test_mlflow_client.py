"""The MLflow Python client, pointed at Envoy with an ID token, works as against MLflow."""
import json
import uuid

from helpers import id_token_for, run_mlflow_client


def run_client(stack, token, *args):
    return run_mlflow_client(stack, {"MLFLOW_TRACKING_TOKEN": token} if token else {}, *args)


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
