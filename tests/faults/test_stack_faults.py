"""Faults of the running stack, injected for real: concurrent runs on one workspace, the worker killed mid-run,
the Prefect server restarted and the MLflow server down during pretraining, a Cancel after the Prefect server
was away, the S3 server killed under the pipeline's push. Each test says how long recovery took (`-s` shows the
RECOVERY lines; docs/reliability.md has them).

The tests share one stack (`--s3`, free ports) and one workspace, in order: each starts from what the one
before built. Slow: the first two took 38 min together on 2 cores under a load of 25 (the data stages and the
tokenizer, not the faults, take the time)."""
from __future__ import annotations

import json
import time

import psutil
import pytest
import yaml

from tests.conftest import make_workspace
from tests.faults.stackctl import FINAL, Prefect, cli, crash, stack_env, stack_state, with_client_env

pytestmark = [pytest.mark.stack, pytest.mark.heavy, pytest.mark.timeout(2400)]  # minutes each, on a busy machine

DATA_STAGES = ["ingest", "curate", "clean"]
PRETRAINING = [*DATA_STAGES, "mix", "tokenizer", "tokenize", "pretrain"]


def recovered(fault: str, seconds: float) -> None:
    print(f"\nRECOVERY {fault}: {seconds:.0f} s", flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("faults")
    ws = make_workspace(root / "ws")
    env = stack_env(ws, data_dir, root / "dvc-remote")
    up = cli("llm-lifecycle", "stack", "up", "--s3", env=env, cwd=ws, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = with_client_env(env, ws)
        yield ws, env, Prefect(env["PREFECT_API_URL"])
    finally:
        cli("llm-lifecycle", "stack", "down", env=env, cwd=ws, timeout=180)


def run_to_end(prefect: Prefect, stages: list[str], timeout_s: float = 1200, **parameters) -> tuple[str, dict]:
    run = prefect.trigger("llm-lifecycle/full", {"stages": stages, **parameters})
    return run, prefect.wait_state(run, FINAL, timeout_s)


def assert_workspace_consistent(ws, env, stages: list[str]) -> None:
    """dvc.lock parses, records every stage, and the outputs on disk are what it says (`dvc status` clean)."""
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    assert set(stages) <= set(lock["stages"]), f"dvc.lock lacks stages: {set(stages) - set(lock['stages'])}"
    status = cli("dvc", "status", *stages, env=env, cwd=ws, timeout=300)
    assert status.returncode == 0 and "up to date" in status.stdout, (
        f"outputs differ from dvc.lock after the fault:\n{status.stdout}{status.stderr}")


def test_three_runs_at_once_one_runs_the_others_say_who_holds_the_lock(stack):
    ws, env, prefect = stack
    runs = [prefect.trigger("llm-lifecycle/full", {"stages": DATA_STAGES}) for _ in range(3)]
    states = {run: prefect.wait_state(run, FINAL, 900) for run in runs}
    completed = [run for run, state in states.items() if state["type"] == "COMPLETED"]
    refused = {run: state for run, state in states.items() if run not in completed}
    assert completed, f"no run completed: {states}"
    for run, state in refused.items():  # refused at once, naming the holder, rather than racing on the files
        assert state["type"] == "FAILED" and "holds the workspace lock" in state["message"], (run, state)
        assert "flow run" in state["message"] and "pid" in state["message"], state["message"]
    print(f"\nconcurrent runs: {len(completed)} completed, {len(refused)} refused", flush=True)
    assert_workspace_consistent(ws, env, DATA_STAGES)


def test_a_killed_worker_leaves_a_crashed_run_and_the_rerun_skips_what_completed(stack):
    ws, env, prefect = stack
    stages = [*DATA_STAGES, "mix", "tokenizer", "tokenize"]
    before = stack_state(ws)["services"]
    run = prefect.trigger("llm-lifecycle/full", {"stages": stages})  # the data stages are done: mix runs first
    # killed in the last stage, so the rerun has one stage to run (the tokenizer took 9 min under a load of 27)
    assert _wait_for_lock_entry(ws, "tokenizer", timeout_s=1200), "the run did not finish the tokenizer in 1200 s"
    killed = time.monotonic()
    crash(before["worker"]["pid"])  # the worker, its flow-run process, DVC and the stage under it

    up = cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300)
    assert up.returncode == 0 and up.stdout.startswith("restarted worker (down)"), up.stdout + up.stderr
    after = stack_state(ws)["services"]
    assert {name: after[name]["pid"] for name in ("prefect", "mlflow", "s3")} == \
           {name: before[name]["pid"] for name in ("prefect", "mlflow", "s3")}, "healthy servers were restarted"
    recovered("worker restarted by `stack up`", time.monotonic() - killed)

    state = prefect.wait_state(run, {"CRASHED", "COMPLETED", "FAILED"}, 400)
    assert state["type"] == "CRASHED", f"the killed run should show Crashed, not {state}"
    recovered("killed run marked Crashed (heartbeat automation)", time.monotonic() - killed)

    rerun, state = run_to_end(prefect, stages)
    assert state["type"] == "COMPLETED", state
    tasks = prefect.task_states(rerun)
    assert all(tasks[name] == "Skipped" for name in [*DATA_STAGES, "mix", "tokenizer"]), tasks
    recovered("rerun completed after the worker was killed", time.monotonic() - killed)
    assert_workspace_consistent(ws, env, stages)


def test_pretraining_survives_an_mlflow_outage_and_a_prefect_restart(stack):
    ws, env, prefect = stack
    from mlflow import MlflowClient

    mlflow = MlflowClient(env["MLFLOW_TRACKING_URI"])
    started = time.time() * 1000
    # a pause per step stretches pretraining past the outages without using more CPU
    run = prefect.trigger("llm-lifecycle/full", {"stages": PRETRAINING, "overrides": {"pretrain.step_pause_s": 1.0}})
    stage_run = _wait_for_training_metrics(mlflow, started, timeout_s=900)

    services = stack_state(ws)["services"]
    crash(services["mlflow"]["pid"])
    down_at = time.monotonic()
    time.sleep(60)
    up = cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300)
    assert up.returncode == 0 and up.stdout.startswith("restarted mlflow (down)"), up.stdout + up.stderr
    recovered("MLflow back after a 60 s outage", time.monotonic() - down_at)

    crash(services["prefect"]["pid"])
    down_at = time.monotonic()
    up = cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300)
    assert up.returncode == 0 and up.stdout.startswith("restarted prefect (down)"), up.stdout + up.stderr
    recovered("Prefect server restarted", time.monotonic() - down_at)

    state = prefect.wait_state(run, FINAL, 1500)
    assert state["type"] == "COMPLETED", state
    recovered("pretraining run completed after both outages", time.monotonic() - down_at)
    logged = {m.step for m in mlflow.get_metric_history(stage_run, "loss")}
    written = {row["step"] for row in map(json.loads, (ws / "reports/pretrain/metrics.jsonl").read_text().splitlines())
               if "loss" in row}
    assert written and logged == written, f"steps missing in MLflow: {sorted(written - logged)}"
    assert mlflow.get_run(stage_run).info.status == "FINISHED"


def test_a_cancel_after_a_prefect_restart_stops_the_run(stack):
    """The worker stops watching for cancels once the server has been away about 30 s (Prefect's "Cancellation
    observer failed. Flow run cancellation disabled"); the flow run's own backstop (tasks/cancel.py) answers the
    Cancel anyway: the run ends Cancelled, its training processes are gone, the published output is untouched."""
    ws, env, prefect = stack
    from mlflow import MlflowClient

    published = _md5s(ws / "data/pretrain")
    started = time.time() * 1000
    # settings not trained before (a finished run's checkpoint would end a rerun at once), a pause per step
    run = prefect.trigger("llm-lifecycle/full", {"stages": PRETRAINING, "overrides": {
        "pretrain.step_pause_s": 1.0, "pretrain.warmup": 10}})
    _wait_for_training_metrics(MlflowClient(env["MLFLOW_TRACKING_URI"]), started, timeout_s=900)
    crash(stack_state(ws)["services"]["prefect"]["pid"])
    time.sleep(45)  # past the worker's tolerance: three failed polls, 10 s apart
    up = cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300)
    assert up.returncode == 0 and up.stdout.startswith("restarted prefect (down)"), up.stdout + up.stderr

    prefect.call(f"/flow_runs/{run}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}})
    asked = time.monotonic()
    state = prefect.wait_state(run, FINAL, 300)
    assert state["type"] == "CANCELLED", state
    recovered("run cancelled after a Prefect restart", time.monotonic() - asked)
    deadline = time.monotonic() + 60
    while (left := _training_processes()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"still running after the cancel: {left}"
    worker_log = (ws / ".llm-lifecycle/stack/worker.log").read_text(errors="replace")
    assert "Cancellation observer failed" in worker_log, "the worker kept watching: the outage did not test the backstop"
    assert "backstop" in state["message"], state
    assert _md5s(ws / "data/pretrain") == published, "the cancelled run changed the published model"
    due = cli("dvc", "status", "--json", "pretrain", env=env, cwd=ws, timeout=300)
    assert "changed outs" not in due.stdout, f"dvc.lock no longer matches data/pretrain: {due.stdout}"


def test_s3_stopped_during_the_pipelines_push_is_retried_and_the_push_completes(stack):
    """The push at the end of a run (tasks/orchestrate.py::push_outputs) outlives an S3 server that is killed
    under it and restarted: it logs the failed attempt, waits, and the next attempt uploads everything."""
    ws, env, prefect = stack
    crash(stack_state(ws)["services"]["s3"]["pid"])
    assert cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300).returncode == 0  # an empty bucket
    run = prefect.trigger("llm-lifecycle/full", {"stages": PRETRAINING})  # nothing changed: skipped, then pushed
    _wait_for_upload(env, timeout_s=600)
    crash(stack_state(ws)["services"]["s3"]["pid"])
    stopped = time.monotonic()
    failed = _wait_for_log(prefect, run, "attempt 1/4 failed", timeout_s=600)
    print(f"\nlogged {time.monotonic() - stopped:.0f} s after the kill: {failed[:400]}")
    assert cli("llm-lifecycle", "stack", "up", env=env, cwd=ws, timeout=300).returncode == 0  # again empty

    state = prefect.wait_state(run, FINAL, 900)
    assert state["type"] == "COMPLETED", state
    in_sync = cli("dvc", "status", "--cloud", env=env, cwd=ws, timeout=300)
    assert "in sync" in in_sync.stdout, in_sync.stdout + in_sync.stderr
    recovered("the run's push completed after the S3 server was killed and restarted", time.monotonic() - stopped)
    assert_workspace_consistent(ws, env, PRETRAINING)


def _md5s(folder) -> dict[str, str]:
    from components.storage import file_md5

    return {p.relative_to(folder).as_posix(): file_md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _training_processes() -> list[str]:
    """Command lines of the processes a pretrain stage runs: `dvc repro` and the training ranks."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "components.train" in line or ("dvc" in line and "repro" in line):
            found.append(line[:200])
    return found


def _wait_for_upload(env: dict, timeout_s: float) -> None:
    """Until the stack's S3 bucket holds an object of the DVC remote (a push is under way)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if s3.list_objects_v2(Bucket="llm-lifecycle", Prefix="dvc/").get("KeyCount"):
                return
        except Exception:  # the bucket is being recreated
            pass
        time.sleep(0.3)
    raise AssertionError(f"no upload to the DVC remote within {timeout_s:.0f} s")


def _wait_for_log(prefect: Prefect, flow_run_id: str, text: str, timeout_s: float) -> str:
    """The first log message of the flow run containing `text`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = prefect.call("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        found = [entry["message"] for entry in logs if text in entry["message"]]
        if found:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} logged no {text!r} within {timeout_s:.0f} s")


def _wait_for_lock_entry(ws, stage: str, timeout_s: float) -> bool:
    """Wait until dvc.lock records `stage` (DVC writes it when the stage has finished)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lock = ws / "dvc.lock"
        if lock.exists() and stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}):
            return True
        time.sleep(1)
    return False


def _wait_for_training_metrics(mlflow, since_ms: float, timeout_s: float) -> str:
    """The id of the pretrain stage run started after `since_ms` once MLflow holds its first training loss."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        experiment = mlflow.get_experiment_by_name("llm-lifecycle")  # created by the run's first stage
        query = f"tags.`llm.stage` = 'pretrain' and attributes.start_time > {since_ms:.0f}"
        runs = mlflow.search_runs([experiment.experiment_id], query) if experiment else []
        if runs and "loss" in runs[0].data.metrics:
            return runs[0].info.run_id
        time.sleep(2)
    raise AssertionError(f"no pretrain run logged a loss within {timeout_s:.0f} s")
