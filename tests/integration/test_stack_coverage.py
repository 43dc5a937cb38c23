"""What the stack promises beyond tests/integration/test_stack.py (one pipeline on `stack up --s3`), each once, on
the default `stack up` (no S3: MLflow serves its artifacts from a local folder, DVC pushes to a local remote):

- the `llm-lifecycle/scaling` deployment through the worker: the shards, then an isoFLOP sweep that recommends a
  size (tests/conftest.py's RECOMMENDING_SWEEP);
- a per-stage deployment, `llm-lifecycle/pretrain`, run with `preset=scaled`: the recommended size is trained;
- the model registry on the server: the version registered by that run, read back with its weights;
- `llm-lifecycle lineage` against the server, from the registered version back to the raw crawl;
- `dvc pull` into a second clone (git clone of the workspace), which then shows `dvc status` clean.

Heavy: passed in 7 min 45 s on 2 quiet cores (2026-12-02; the six upstream stages, six sweep points and one
pretraining run).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.dag import Workspace
from tests.conftest import RECOMMENDING_SWEEP, make_workspace
from tests.faults.stackctl import stack_env

BIN = Path(sys.executable).parent
UPSTREAM = ["ingest", "curate", "clean", "mix", "tokenizer", "tokenize"]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def cli(*args: str, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    return subprocess.run([exe, *args[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def deployment(name: str, *params: str, env: dict, cwd: Path, timeout: float) -> None:
    flags = [flag for p in params for flag in ("-p", p)]
    ran = cli("prefect", "deployment", "run", name, *flags, "--watch", env=env, cwd=cwd, timeout=timeout)
    worker_log = Path(cwd, ".llm-lifecycle/stack/worker.log")
    tail = worker_log.read_text(errors="replace")[-4000:] if worker_log.exists() else ""
    assert ran.returncode == 0 and "Completed" in ran.stdout, \
        f"deployment {name} did not complete:\n{ran.stdout[-3000:]}{ran.stderr[-3000:]}\nworker log ends:\n{tail}"


def stages_in(chain: dict) -> set[str]:
    """Every stage on the lineage chain below a node."""
    found = {chain["stage"]} if chain.get("stage") else set()
    for read in chain["inputs"]:
        if read["produced_by"]:
            found |= stages_in(read["produced_by"])
    return found


def raw_sources(chain: dict) -> list[str]:
    found = list(chain.get("raw_sources", []))
    for read in chain["inputs"]:
        if read["produced_by"]:
            found += raw_sources(read["produced_by"])
    return found


@pytest.mark.stack
@pytest.mark.heavy
@pytest.mark.timeout(5400)
def test_default_stack_runs_the_scaling_and_stage_deployments_with_registry_lineage_and_a_second_clone(
        tmp_path, data_dir, monkeypatch):
    ws = make_workspace(tmp_path / "ws")
    remote = tmp_path / "dvc-remote"
    env = stack_env(ws, data_dir, remote)  # free ports: another stack may be up
    up = cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((ws / ".llm-lifecycle/stack/state.json").read_text())
        assert set(state["services"]) == {"prefect", "mlflow", "worker"} and state["s3"] is False
        exports = cli("llm-lifecycle", "stack", "env", env=env, cwd=ws).stdout
        env |= dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        assert "MLFLOW_S3_ENDPOINT_URL" not in exports  # artifacts on the MLflow server's disk
        # this process's MLflow calls too (models:/ URIs resolve through the registry URI, which follows this, not a
        # client's tracking_uri argument)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])

        deployment("llm-lifecycle/scaling", f"sweep={json.dumps(RECOMMENDING_SWEEP)}", env=env, cwd=ws, timeout=3600)
        overlay = yaml.safe_load((ws / "params.scaling.yaml").read_text())["pretrain"]
        from mlflow import MlflowClient

        mlflow = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
        sweep_run = mlflow.get_run(overlay["scaling_run"])
        assert sweep_run.info.status == "FINISHED" and sweep_run.data.tags["llm.kind"] == "scaling"
        prefect_url = f"http://127.0.0.1:{env['LLM_LIFECYCLE_PREFECT_PORT']}/"
        assert sweep_run.data.tags["llm.prefect.flow_run_url"].startswith(prefect_url)
        experiment = sweep_run.info.experiment_id
        points = mlflow.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{sweep_run.info.run_id}'")
        assert len(points) == 6 and all(p.data.tags["llm.kind"] == "scaling-point" for p in points)
        assert sweep_run.data.metrics["law.a"] > 0 and overlay["model"]["depth"] >= 1 and overlay["steps"] >= 1
        assert "reports/isoflop.png" in {a.path for a in mlflow.list_artifacts(sweep_run.info.run_id, "reports")}

        deployment("llm-lifecycle/pretrain", "preset=scaled", env=env, cwd=ws, timeout=1800)
        version = mlflow.get_model_version("llm-lifecycle-base", "1")  # registered on the server
        trained = mlflow.get_run(version.run_id)
        assert trained.data.tags["llm.stage"] == "pretrain" and trained.info.status == "FINISHED"
        assert trained.data.params["pretrain.scaling_run"] == sweep_run.info.run_id
        assert trained.data.params["pretrain.model.depth"] == str(overlay["model"]["depth"])
        from mlflow.artifacts import download_artifacts

        model = Path(download_artifacts("models:/llm-lifecycle-base/1", dst_path=str(tmp_path / "model"),
                                        tracking_uri=env["MLFLOW_TRACKING_URI"]))
        assert json.loads((model / "config.json").read_text())["num_hidden_layers"] == overlay["model"]["depth"]

        traced = cli("llm-lifecycle", "lineage", "models:/llm-lifecycle-base/1", "--json", env=env, cwd=ws)
        assert traced.returncode == 0, traced.stdout + traced.stderr
        chain = json.loads(traced.stdout)
        assert chain["run_id"] == version.run_id and stages_in(chain) == {"pretrain", *UPSTREAM}
        assert any(s.endswith(".warc.gz") for s in raw_sources(chain))  # back to the crawl

        # the deployment pushed its outputs; a second clone gets them with `dvc pull` and finds them current
        in_sync = cli("dvc", "status", "--cloud", env=env, cwd=ws)
        assert "in sync" in in_sync.stdout, in_sync.stdout + in_sync.stderr
        built = [*UPSTREAM, "pretrain"]
        # the stages' metrics are `cache: false` in dvc.yaml: versioned by git (not gitignored), not pushed to the
        # DVC remote; without them in the commit a clone's `dvc pull` fails "Checkout failed" once per stage
        metrics = [path for name in built for path in Workspace(ws).stage(name).metrics]
        subprocess.run([*GIT, "add", "dvc.lock", *metrics], cwd=ws, check=True)
        subprocess.run([*GIT, "commit", "-qm", "scaled pretraining"], cwd=ws, check=True)
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
        (clone / "params.scaling.yaml").write_text((ws / "params.scaling.yaml").read_text())  # the sweep's output
        for step in (["dvc", "remote", "add", "--local", "--default", "local", str(remote)],
                     ["llm-lifecycle", "params", "--preset", "scaled"], ["dvc", "pull", *built]):
            done = cli(*step, env=env | {"LLM_LIFECYCLE_WORKSPACE": str(clone)}, cwd=clone)
            assert done.returncode == 0, f"{' '.join(step)} in the clone failed:\n{done.stdout}{done.stderr}"
        status = cli("dvc", "status", *built, env=env, cwd=clone)
        assert "up to date" in status.stdout, status.stdout + status.stderr
        assert (clone / "data/pretrain/config.json").read_text() == (ws / "data/pretrain/config.json").read_text()
    finally:
        down = cli("llm-lifecycle", "stack", "down", env=env, cwd=ws, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
