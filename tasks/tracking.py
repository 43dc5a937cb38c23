"""MLflow tracking and lineage.

One parent run per pipeline run, one nested run per stage that ran. The orchestrator opens and closes
the runs; the stage process (started by DVC) logs its metrics and reports into the run whose id it gets
in MLFLOW_RUN_ID. Lineage is tags: each stage run records the DVC md5 of every input and output, so the
run that produced an input is the one whose output tag carries the same md5.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import warnings
from fnmatch import fnmatch
from pathlib import Path

EXPERIMENT = "llm-lifecycle"
RUN_ID_ENV = "MLFLOW_RUN_ID"
TAG = "llm."  # prefix of our tags: llm.stage, llm.input.<path>, llm.output.<path>, ...


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def default_tracking_uri(root: Path) -> str:
    """Embedded default: a SQLite file in the workspace (the stack sets MLFLOW_TRACKING_URI to its server)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / '.llm-lifecycle' / 'mlflow.db'}"


def experiment_id(root: Path) -> str:
    c = client()
    found = c.get_experiment_by_name(EXPERIMENT)
    if found:
        return found.experiment_id
    artifacts = None if _is_server() else (root / ".llm-lifecycle" / "mlartifacts").as_uri()
    return c.create_experiment(EXPERIMENT, artifact_location=artifacts)


def _is_server() -> bool:
    import mlflow

    return mlflow.get_tracking_uri().startswith("http")


def run_url(run_id: str) -> str | None:
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("http"):
        return None
    run = client().get_run(run_id)
    return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


# Tracked files every run rewrites itself: DVC's record of what each output was built from, and the stages'
# metrics (`cache: false` in dvc.yaml, so versioned by git). A change there is the pipeline's own bookkeeping,
# not code or parameters that differ from the commit. fnmatch patterns: `*` spans folders.
RUN_WRITES = ("dvc.lock", "reports/*metrics.json")


def git_commit(root: Path) -> str:
    """HEAD, with `-dirty` when code or parameters differ from it (dirty_files says which)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty_files(root) else "")


def dirty_files(root: Path) -> list[str]:
    """Tracked files that differ from HEAD, other than those the run itself rewrites (RUN_WRITES)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "-z"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    entries, paths = iter(out.split("\0")), set()
    for entry in entries:  # "XY path"; a rename or copy (X = R, C) is followed by its old path
        if entry:
            paths.add(entry[3:])
            if entry[0] in "RC":
                paths.add(next(entries))
    return sorted(p for p in paths if not any(fnmatch(p, written) for written in RUN_WRITES))


def start_run(root: Path, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
    tags = {f"{TAG}{k}": str(v) for k, v in tags.items()} | {"mlflow.source.git.commit": git_commit(root)}
    if dirty := dirty_files(root):
        tags[f"{TAG}git.dirty_files"] = " ".join(dirty)[:5000]
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    return client().create_run(experiment_id(root), run_name=name, tags=tags).info.run_id


def end_run(run_id: str, ok: bool) -> None:
    client().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def _leading_entries(items: list[str], limit: int) -> list[str]:
    """The longest leading run of `items` whose JSON list is at most `limit` characters (still valid JSON)."""
    size, kept = 2, []
    for item in items:
        size += len(json.dumps(item)) + 2
        if size > limit:
            break
        kept.append(item)
    return kept


def record_lineage(root: Path, run_id: str, lock_entry: dict, params: dict, raw_sources: list[str]) -> None:
    """Tag the stage run with the DVC md5 of each input and output (and the raw files it read, if any),
    and log its data inputs as MLflow datasets whose digest is the DVC md5."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    c = client()
    tags, datasets = {}, []
    for dep in lock_entry.get("deps", []):
        tags[f"{TAG}input.{dep['path']}"] = dep.get("md5", "")
        if dep["path"].startswith("data/"):
            ds = MetaDataset(_local_source(root / dep["path"]), name=dep["path"], digest=dep["md5"])
            datasets.append(DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", "input")]))
    for out in lock_entry.get("outs", []):
        tags[f"{TAG}output.{out['path']}"] = out.get("md5", "")
    if raw_sources:  # a tag holds at most 8,000 characters: whole entries in it, the full list as an artifact
        tags[f"{TAG}raw_sources"] = json.dumps(_leading_entries(raw_sources, 7000))
        tags[f"{TAG}raw_sources_count"] = str(len(raw_sources))
        c.log_dict(run_id, raw_sources, "lineage/raw_sources.json")
    for key, value in tags.items():
        c.set_tag(run_id, key, value)
    for section, values in params.items():
        for key, value in _flatten(values, section):
            c.log_param(run_id, key, str(value)[:6000])
    if datasets:
        c.log_inputs(run_id, datasets)


def _local_source(path: Path):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # a local path matches two registered source types; either is right
        warnings.simplefilter("ignore")
        return resolve_dataset_source(str(path))


def _flatten(values, prefix: str):
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _flatten(value, f"{prefix}.{key}")
    else:
        yield prefix, values


def server_reachable(timeout_s: float = 2) -> bool:
    """Whether the tracking server answers its health check now (always true for a local SQLite store)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("http"):
        return True
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


class RunHandle:
    """A handle on one MLflow run: a stage process's own (a no-op when not orchestrated), or a sweep point's.

    Metrics are buffered while the tracking server is away: training must not stall or die because tracking
    is down, so each value keeps its step and timestamp and goes with the first send that gets through."""

    BATCH = 1000  # MLflow's limit on metrics per log_batch

    def __init__(self, run_id: str | None):
        self.run_id = run_id
        self.unsent: list = []  # mlflow.entities.Metric, oldest first
        self.away_since: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Send `metrics` at `step` now, after any buffered ones; MLflow's own retries bridge a short outage,
        and an error is raised if the server stays away."""
        self._queue(metrics, step)
        while self.unsent:
            client().log_batch(self.run_id, metrics=self.unsent[:self.BATCH])
            del self.unsent[:self.BATCH]

    def buffer_metrics(self, metrics: dict[str, float], step: int = 0) -> bool:
        """Queue `metrics` at `step` and send what is queued if the server answers; never blocks long or raises
        on an unreachable server. Returns whether nothing is left unsent."""
        self._queue(metrics, step)
        return self.send_unsent()

    def _queue(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id and metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.unsent += [Metric(key, float(value), now, step) for key, value in metrics.items() if value is not None]

    def send_unsent(self) -> bool:
        """Send the buffered metrics if the server answers; a failed send keeps them for the next try."""
        from mlflow.exceptions import MlflowException

        while self.unsent:
            # the health check fails fast; MLflow's own retries would block the caller for minutes
            try:
                if not server_reachable():
                    raise ConnectionError("no answer to its health check")
                batch = self.unsent[:self.BATCH]
                client().log_batch(self.run_id, metrics=batch)
            except (MlflowException, OSError) as err:
                if self.away_since is None:
                    self.away_since = time.monotonic()
                    print(f"MLflow unreachable ({str(err)[:200]}); buffering metrics until it is back", flush=True)
                return False
            del self.unsent[:len(batch)]
        if self.away_since is not None:
            print(f"MLflow is back after {time.monotonic() - self.away_since:.0f} s: buffered metrics sent", flush=True)
            self.away_since = None
        return True

    def flush_metrics(self, wait_s: float, poll_s: float = 2) -> list:
        """Keep sending the buffered metrics for up to `wait_s`; returns what could not be sent (the gap)."""
        deadline = time.monotonic() + wait_s
        while not self.send_unsent() and time.monotonic() < deadline:
            time.sleep(poll_s)
        return list(self.unsent)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            for key, value in tags.items():
                client().set_tag(self.run_id, f"{TAG}{key}", value)

    def register_model(self, folder: Path, name: str, tags: dict[str, str], description: str) -> str | None:
        """Log `folder` as the run's `model` artifacts and register them as a new version of model `name`
        (created if new) carrying `tags`; returns the version, or None when not tracked."""
        if not self.run_id:
            return None
        from mlflow.exceptions import MlflowException

        c = client()
        c.log_artifacts(self.run_id, str(folder), artifact_path="model")
        try:
            c.create_registered_model(name, description="llm-lifecycle pretrained models")
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{c.get_run(self.run_id).info.artifact_uri.rstrip('/')}/model"
        version = c.create_model_version(name, source, run_id=self.run_id, tags=tags, description=description)
        self.set_tags({"registered_model": f"{name}/{version.version}"})
        return version.version

    def log_reports(self, folder: Path) -> None:
        if self.run_id:
            client().log_artifacts(self.run_id, str(folder), artifact_path="reports")


def current_stage_run() -> RunHandle:
    return RunHandle(os.environ.get(RUN_ID_ENV))
