"""Running one stage: the body of `llm-lifecycle stage NAME`, which is each stage's command in dvc.yaml.

The stage writes into a staging folder; its output is validated by the stage's Great Expectations suite
and published only if the suite passes. The exit code tells the orchestrator whether a retry can help.
"""
from __future__ import annotations

import errno
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError

import yaml
from pydantic import BaseModel

from components.storage import staged_dir
from tasks import gates, tracking
from tasks.dag import StageError, StageSpec, Workspace
from tasks.integrity import check_inputs
from tasks.params import EFFECTIVE_FILE, load_effective

EXIT_GATE_FAILED = 65  # EX_DATAERR: the data is wrong; a retry cannot help
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: a network read failed; a retry may help


def is_transient(err: BaseException) -> bool:
    """A failed network read (refused, reset, timed out, DNS, HTTP 5xx) may succeed when retried."""
    if isinstance(err, HTTPError):
        return err.code >= 500
    return isinstance(err, (ConnectionError, TimeoutError, URLError))


@dataclass(frozen=True)
class StageContext:
    """What a stage body gets: its parameters, its inputs, and where to write."""

    spec: StageSpec
    params: BaseModel
    inputs: dict[str, Path]  # upstream stage → its published data folder (disabled upstream stages left out)
    out_dir: Path  # staging folder that becomes data/<stage> once the gate passes
    report_dir: Path  # reports/<stage> (reports/<group>/<item>): small files for people and MLflow
    state_dir: Path  # .llm-lifecycle/<stage>: kept between runs (e.g. checkpoints to resume from)


def execute(ws: Workspace, name: str, progress: bool = True) -> dict[str, float]:
    """Run stage `name` in the workspace; return its metrics."""
    spec, module = ws.stage(name), ws.module(name)
    params = load_effective(ws, module.SECTION)
    disabled = ws.disabled(yaml.safe_load((ws.root / EFFECTIVE_FILE).read_text()))
    reads = {up: folder for up, folder in spec.inputs().items() if up not in disabled}
    missing = [folder for folder in reads.values() if not (ws.root / folder).exists()]
    if missing:
        raise StageError(
            f"stage {name!r} reads {', '.join(missing)}, which does not exist: run its upstream stage "
            f"first (`llm-lifecycle run --stages {' '.join(spec.upstream)}`) or fetch it with `dvc pull`"
        )
    check_inputs(ws, reads)  # a byte flipped, a shard truncated, a cache copy lost since the upstream published
    inputs = {up: ws.root / folder for up, folder in reads.items()}
    report_dir = ws.root / spec.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    run = tracking.current_stage_run()
    started = time.monotonic()
    state_dir = ws.state_dir / name
    final = ws.root / spec.data_out
    with staged_dir(final) as out_dir:
        ctx = StageContext(spec, params, inputs, out_dir, report_dir, state_dir)
        try:
            metrics = dict(module.run(ctx, progress=progress))
        except OSError as err:
            if err.errno != errno.ENOSPC and "No space left on device" not in str(err):  # pyarrow sets no errno
                raise
            raise DiskFull(_disk_full_message(name, out_dir, final)) from err
        _validate(module.GATES, out_dir, params, report_dir, run)
        metrics["duration_s"] = round(time.monotonic() - started, 3)
        _write_json(report_dir / "metrics.json", metrics, sort_keys=False)  # the stage's order: headline first
        run.log_metrics(metrics)
        run.log_reports(report_dir)
    if hasattr(module, "published"):  # e.g. register the model: only once it passed its gate and is in place
        module.published(StageContext(spec, params, inputs, final, report_dir, state_dir), run)
    return metrics


class DiskFull(StageError):
    """The disk filled while the stage wrote its output; the previous output is untouched."""


def _disk_full_message(name: str, staging: Path, final: Path) -> str:
    written, previous = _size(staging), _size(final) if final.exists() else 0
    files = [p for p in staging.rglob("*") if p.is_file()]
    at = max(files, key=lambda p: p.stat().st_mtime) if files else staging
    last = f" (its last output took {_mb(previous)})" if previous else ""
    kept = f"the previous output {final} is intact" if final.exists() else "nothing was published"
    return (f"no space left on the device holding {staging.parent} while stage {name!r} wrote {at}: it had written "
            f"{_mb(written)}{last}; {_mb(shutil.disk_usage(staging.parent).free)} are free. Make at least "
            f"{_mb(max(written, previous))} free there (more if the output grows) or move the workspace, and rerun; "
            f"{kept}.")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _validate(gate_suites: dict[str, str], out_dir: Path, params: BaseModel, report_dir: Path, run) -> None:
    """Every file group of the output against its suite; the results saved, the first failure raised."""
    results, failure = {}, None
    for pattern, suite in gate_suites.items():
        try:
            results[pattern] = gates.validate(suite, out_dir, pattern=pattern, params=params)
        except gates.GateFailed as failed:
            results[pattern], failure = failed.result, failed
            break
    _write_json(report_dir / "validation.json", results)
    if failure:
        run.log_reports(report_dir)  # the failing result reaches MLflow before the stage stops
        raise failure


def _write_json(path: Path, data: dict, sort_keys: bool = True) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=str))
    tmp.replace(path)
