"""The local stack for real: Prefect server + process worker, MLflow server and the loopback S3 server,
started by `llm-lifecycle stack up --s3`, driven with the prefect CLI, stopped by `stack down`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.stack import group_alive
from tests.conftest import make_workspace
from tests.faults.stackctl import free_ports, listening

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.stack
def test_stack_runs_the_full_deployment_and_down_leaves_nothing(tmp_path, data_dir):
    ws = make_workspace(tmp_path / "ws")
    prefect_port, mlflow_port, s3_port = free_ports(3)  # free ones: a developer's stack or another suite may run
    env = os.environ | {
        "LLM_LIFECYCLE_WORKSPACE": str(ws), "LLM_LIFECYCLE_DATA_DIR": str(data_dir),
        "LLM_LIFECYCLE_PREFECT_PORT": str(prefect_port), "LLM_LIFECYCLE_MLFLOW_PORT": str(mlflow_port),
        "LLM_LIFECYCLE_S3_PORT": str(s3_port),
    }
    up = cli("llm-lifecycle", "stack", "up", "--s3", env=env, cwd=ws)
    state = json.loads((ws / ".llm-lifecycle/stack/state.json").read_text()) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(state["services"]) == {"s3", "prefect", "mlflow", "worker"}
        sockets = listening(ws)  # every server the stack started, loopback only
        assert {(name, port) for name, _, port in sockets} >= {("s3", s3_port), ("prefect", prefect_port),
                                                              ("mlflow", mlflow_port)}, sockets
        assert {address for _, address, _ in sockets} == {"127.0.0.1"}, f"a server listens beyond loopback: {sockets}"
        exports = cli("llm-lifecycle", "stack", "env", env=env, cwd=ws).stdout
        env |= dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{prefect_port}/api"

        # the full deployment, bounded to the pretraining stages: the whole 18-stage DAG runs in-process in
        # tests/integration/test_pipeline.py; here it is the real servers and worker that are under test
        pretraining = json.dumps(["ingest", "curate", "clean", "mix", "tokenizer", "tokenize", "pretrain"])
        ran = cli("prefect", "deployment", "run", "llm-lifecycle/full", "-p", f"stages={pretraining}", "--watch",
                  env=env, cwd=ws, timeout=900)
        assert ran.returncode == 0 and "Completed" in ran.stdout, ran.stdout + ran.stderr

        from mlflow import MlflowClient

        mlflow = MlflowClient(env["MLFLOW_TRACKING_URI"])
        runs = mlflow.search_runs([mlflow.get_experiment_by_name("llm-lifecycle").experiment_id])
        stage = next(r for r in runs if r.data.tags.get("llm.stage") == "ingest")
        assert stage.info.status == "FINISHED" and stage.data.metrics["records"] > 50
        assert stage.data.tags["llm.prefect.flow_run_url"].startswith(f"http://127.0.0.1:{prefect_port}/")
        artifacts = mlflow.list_artifacts(stage.info.run_id, "reports")  # served from the S3 bucket
        assert "reports/validation.json" in {a.path for a in artifacts}

        in_sync = cli("dvc", "status", "--cloud", env=env, cwd=ws)
        assert "in sync" in in_sync.stdout, in_sync.stdout + in_sync.stderr
        assert cli("llm-lifecycle", "stack", "status", env=env, cwd=ws).returncode == 0

        assert cli("llm-lifecycle", "stack", "up", "--s3", env=env, cwd=ws).stdout.startswith("already up")
        # the worker runs stages with the environment it started with: another data dir restarts the stack
        moved = cli("llm-lifecycle", "stack", "up", "--s3", env=env | {"LLM_LIFECYCLE_DATA_DIR": str(tmp_path)}, cwd=ws)
        assert moved.stdout.startswith("restarted: LLM_LIFECYCLE_DATA_DIR changed"), moved.stdout + moved.stderr
        assert [name for name, svc in state["services"].items() if group_alive(svc["pid"])] == []  # the old ones
        state = json.loads((ws / ".llm-lifecycle/stack/state.json").read_text())
    finally:
        down = cli("llm-lifecycle", "stack", "down", env=env, cwd=ws, timeout=120)
    assert down.returncode == 0
    assert [name for name, svc in state["services"].items() if group_alive(svc["pid"])] == []
    assert cli("llm-lifecycle", "stack", "status", env=env, cwd=ws).returncode == 1
