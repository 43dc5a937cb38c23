"""The Prefect face of the DAG: one task per DVC stage, the workspace lock, the run summary.

DVC decides whether a stage must run (its code, params or inputs changed) and runs it
(`dvc repro --single-item`), so dvc.lock stays the record of what every output was built from.
Prefect shows each decision: a stage DVC skips finishes in a `Skipped` state with the reason.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed

from tasks import tracking
from tasks.cancel import watch_for_cancel
from tasks.dag import UNCHANGED, StageError, Workspace
from tasks.params import digest, resolve, write_effective
from tasks.sources import write_source_digests
from tasks.stage import EXIT_TRANSIENT

BIN = os.path.dirname(sys.executable)  # this environment's dvc and llm-lifecycle


class StageFailed(RuntimeError):
    def __init__(self, stage: str, exit_code: int | None, output: str):
        self.stage, self.exit_code = stage, exit_code
        super().__init__(f"stage {stage!r} failed (exit code {exit_code}):\n{output}")


class WorkspaceBusy(RuntimeError):
    pass


@dataclass
class Session:
    """One pipeline run over one workspace: the lock, the effective params, the parent MLflow run."""

    ws: Workspace
    params: dict
    run_id: str
    lock: FileLock
    outcomes: list[dict] = field(default_factory=list)

    def plan(self, stages: list[str] | None) -> list[str]:
        names = [s.name for s in self.ws.stages]
        for name in stages or []:
            self.ws.stage(name)  # unknown names fail here, before anything runs
        return [n for n in names if not stages or n in stages]


def open_session(ws: Workspace, preset: str, overrides: dict[str, Any], lock_wait_s: float) -> Session:
    lock = acquire_workspace(ws, lock_wait_s)
    try:
        params = resolve(ws, preset, overrides)
        write_effective(ws, params)
        write_source_digests(ws, params)
        import mlflow

        mlflow.set_tracking_uri(tracking.default_tracking_uri(ws.root))
        run_id = tracking.start_run(ws.root, f"pipeline {params['preset']}", {
            "kind": "pipeline", "preset": params["preset"], "overrides": json.dumps(overrides, sort_keys=True),
            "params_digest": digest(params), **prefect_tags(),
        })
    except BaseException:
        lock.release()
        raise
    watch_for_cancel()
    return Session(ws, params, run_id, lock)


def acquire_workspace(ws: Workspace, wait_s: float) -> FileLock:
    ws.state_dir.mkdir(exist_ok=True)
    holder = ws.state_dir / "pipeline.lock.holder"
    lock = FileLock(ws.state_dir / "pipeline.lock")
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "unknown"
        raise WorkspaceBusy(
            f"another pipeline run holds the workspace lock {lock.lock_file} ({who}); "
            f"wait for it to finish, or pass lock_wait_s / --wait SECONDS to queue behind it"
        ) from None
    holder.write_text(f"pid {os.getpid()}, flow run {flow_run.id}, since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
    return lock


def prefect_tags() -> dict[str, str]:
    url = flow_run.ui_url or ""
    return {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_url": url if url.startswith("http") else ""}


def _transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix: a failed network read, not bad data or a bug."""
    try:
        state.result()
    except StageFailed as failed:
        return failed.exit_code == EXIT_TRANSIENT
    return False


@task(task_run_name="{name}", retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def run_stage(name: str, force: bool, parent_run_id: str, params: dict, skip: str | None = None):
    """Run one DVC stage if DVC says it changed (or when forced), tracked as a nested MLflow run; `skip`: why
    it does not run, when the flow already knows (`Workspace.skips`)."""
    ws, log = Workspace(), get_run_logger()
    if skip:
        return _skipped(name, skip, log)
    disabled = ws.disabled(params).get(name)  # e.g. an alignment method params.yaml does not choose, and its evaluation
    if disabled:
        return _skipped(name, disabled, log)
    section = ws.module(name).SECTION
    reason = "forced" if force else ws.changes(name)
    if reason is None:
        return _skipped(name, UNCHANGED, log)
    log.info("%s: running (%s)", name, reason)
    run_id = tracking.start_run(ws.root, name, {
        "kind": "stage", "stage": name, "reason": reason[:5000],
        "params_digest": digest(params[section]), **prefect_tags(),
    }, parent_id=parent_run_id)
    started = time.monotonic()
    try:
        _dvc_repro(ws, name, force, run_id, log)
    except BaseException:
        tracking.end_run(run_id, ok=False)
        raise
    tracking.record_lineage(ws.root, run_id, ws.lock_entry(name), {section: params[section]}, _raw_sources(ws, name))
    tracking.end_run(run_id, ok=True)
    reports = ws.root / ws.stage(name).report_dir
    metrics_file = reports / "metrics.json"
    return {
        "stage": name, "status": "ran", "reason": reason, "duration_s": round(time.monotonic() - started, 1),
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
        "run_id": run_id, "run_url": tracking.run_url(run_id),
        "reports": sorted(p.name for p in reports.glob("*.md")),  # data cards and tables people read
    }


def _skipped(name: str, message: str, log):
    log.info("%s: %s", name, message)
    return Completed(name="Skipped", message=message, data={"stage": name, "status": "skipped", "reason": message})


def _raw_sources(ws: Workspace, name: str) -> list[str]:
    """The raw files a stage read from outside the workspace, as its manifest lists them."""
    manifest = ws.root / ws.stage(name).report_dir / "manifest.json"
    if not manifest.exists():
        return []
    sources = json.loads(manifest.read_text()).get("sources", [])
    return [f["url"] for s in sources for f in s.get("files", [])]


def _dvc_repro(ws: Workspace, name: str, force: bool, run_id: str, log) -> None:
    import mlflow

    env = os.environ | {tracking.RUN_ID_ENV: run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
                        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # dvc runs `llm-lifecycle stage`
    cmd = [f"{BIN}/dvc", "repro", "--single-item", *(["--force"] if force else []), name]
    proc = subprocess.Popen(cmd, cwd=ws.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: deque[str] = deque(maxlen=60)
    for line in proc.stdout:
        line = line.rstrip()
        if line and "\r" not in line:  # progress bars redraw with \r: keep them out of the log
            log.info("%s | %s", name, line)
        tail.append(line.split("\r")[-1])
    if proc.wait() != 0:
        output = "\n".join(tail)
        exit_code = re.search(r"exited with (\d+)", output)
        raise StageFailed(name, int(exit_code.group(1)) if exit_code else proc.returncode, output)


REMOTE_ENV = "LLM_LIFECYCLE_DVC_REMOTE"


def ensure_remote(ws: Workspace) -> str:
    """The default DVC remote; if none is configured, a local folder shared by every clone on this machine
    (content-addressed, so sharing is safe), set in .dvc/config.local."""
    with ws.dvc() as repo:
        name = repo.config["core"].get("remote")
    if name:
        return name
    folder = os.environ.get(REMOTE_ENV) or str(Path.home() / ".cache" / "llm-lifecycle" / "dvc-remote")
    subprocess.run([f"{BIN}/dvc", "remote", "add", "--local", "--default", "--force", "local", folder],
                   cwd=ws.root, check=True, capture_output=True)
    return "local"


PUSH_ATTEMPTS_ENV, PUSH_BACKOFF_ENV = "LLM_LIFECYCLE_PUSH_ATTEMPTS", "LLM_LIFECYCLE_PUSH_BACKOFF_S"


def push_outputs(ws: Workspace) -> str:
    """Push the DVC-tracked outputs to the default remote, so another clone can `dvc pull` them.

    A remote that is briefly away (a restarting S3 server) is retried with exponential backoff: 4 attempts, waits
    of 10, 20 and 40 s by default (LLM_LIFECYCLE_PUSH_ATTEMPTS, LLM_LIFECYCLE_PUSH_BACKOFF_S); a push only
    uploads what the remote lacks, so an attempt resumes where the one before stopped."""
    name = ensure_remote(ws)
    attempts = max(1, int(os.environ.get(PUSH_ATTEMPTS_ENV, "4")))
    backoff_s = float(os.environ.get(PUSH_BACKOFF_ENV, "10"))
    log = _logger()
    for attempt in range(1, attempts + 1):
        try:
            with ws.dvc() as repo:  # in this process: a `dvc push` process would spend seconds importing DVC again
                return f"{repo.push()} files pushed"
        except Exception as err:  # DVC raises its own, botocore's and OS errors alike; all may be transient
            error = err
            if attempt < attempts:
                wait_s = backoff_s * 2 ** (attempt - 1)
                log.warning(f"dvc push to remote {name!r}, attempt {attempt}/{attempts} failed: {err}; "
                            f"retrying in {wait_s:g} s")
                time.sleep(wait_s)
    raise StageError(_push_failed(ws, name, attempts, error)) from error


def _push_failed(ws: Workspace, name: str, attempts: int, error: Exception) -> str:
    with ws.dvc() as repo:
        remote = dict(repo.config["remote"].get(name, {}))
    where = remote.get("url", "?") + (f" at {remote['endpointurl']}" if remote.get("endpointurl") else "")
    local_s3 = re.search(r"//(127\.0\.0\.1|localhost)[:/]", remote.get("endpointurl", ""))
    restart = "restart the local stack's S3 server (`llm-lifecycle stack up --s3`), then " if local_s3 else \
        "once the remote is reachable again, "
    return (f"dvc push to remote {name!r} ({where}) failed {attempts} times; last error: "
            f"{type(error).__name__}: {error}\n"
            f"The local outputs, the DVC cache and dvc.lock are intact; only the upload is missing. To finish it, "
            f"{restart}run `dvc push` (or the next pipeline run pushes).")


def _logger():
    """The flow run's logger (the message shows in Prefect), or this module's outside a flow run."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def publish_summary(session: Session, failed: BaseException | None) -> str:
    """A markdown table, per stage: status, duration, key metrics, MLflow link; in Prefect and MLflow."""
    rows = ["| stage | status | duration | key metrics | MLflow |", "|---|---|---|---|---|"]
    for o in session.outcomes:
        shown = [(k, v) for k, v in o.get("metrics", {}).items() if k != "duration_s"][:6]  # has its own column
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in shown)
        link = f"[run]({o['run_url']})" if o.get("run_url") else o.get("run_id", "")
        for report in o.get("reports", []) if o.get("run_url") else []:
            link += f" · [{report.removesuffix('.md')}]({o['run_url']}/artifactPath/reports/{report})"
        duration = f"{o['duration_s']} s" if "duration_s" in o else ""
        status = f"{o['status']}: {o['reason'][:120]}" if o.get("reason") else o["status"]
        rows.append(f"| {o['stage']} | {status} | {duration} | {metrics} | {link} |")
    head = f"# llm-lifecycle run — preset `{session.params['preset']}`\n\n"
    parent = tracking.run_url(session.run_id) or session.run_id
    text = head + "\n".join(rows) + f"\n\nMLflow pipeline run: {parent}\n"
    if failed:
        text += f"\n**Failed:**\n\n```\n{str(failed)[-3000:]}\n```\n"
    create_markdown_artifact(text, key="pipeline-summary", description="stages of this pipeline run")
    tracking.client().log_text(session.run_id, text, "summary.md")
    return text


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def close_session(session: Session, failed: BaseException | None) -> None:
    try:
        publish_summary(session, failed)
        tracking.end_run(session.run_id, ok=failed is None)
    finally:
        session.lock.release()


def failed_outcome(name: str, error: BaseException) -> dict:
    return {"stage": name, "status": "failed", "error": str(error)[-500:]}
