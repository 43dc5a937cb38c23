"""Where the time of a no-op `prefect deployment run llm-lifecycle/full` goes, on a running stack.

    eval "$(llm-lifecycle stack env)"      # in a workspace the pipeline has built (every stage current)
    python -m benchmarks.noop_rerun [--runs 3] [--deployment llm-lifecycle/full] [--stages ingest curate ...]

Each run is started as a user starts it (`prefect deployment run ... --watch`, timed end to end), then split by
the flow run's state changes and log timestamps on the server:
  cli start       the prefect CLI's own start-up, until the flow run exists on the server
  worker pick-up  Scheduled → Pending: until the worker's next poll (PREFECT_WORKER_QUERY_SECONDS)
  engine start    Pending → Running: the flow-run process starts, imports Prefect and loads the flow
  session open    Running → the first stage decision: workspace lock, params, the parent MLflow run
  stages          first → last stage decision (the skipped stages' Prefect tasks, DVC status)
  close           last stage decision → Completed: dvc push, the summary artifact, MLflow end
  cli end         Completed → the CLI returns
Prints a markdown table per run and the median. Results: benchmarks/RESULTS.md, "No-op rerun".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = ["cli start", "worker pick-up", "engine start", "session open", "stages", "close", "cli end"]


def run_once(deployment: str, stages: list[str], timeout_s: float) -> dict[str, float]:
    only = ["-p", f"stages={json.dumps(stages)}"] if stages else []
    started = time.time()
    out = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", deployment, *only, "--watch"],
                         capture_output=True, text=True, timeout=timeout_s)
    ended = time.time()
    if out.returncode != 0 or "Completed" not in out.stdout:
        raise SystemExit(f"{deployment} did not complete:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    flow_run_id = next(line.split()[-1] for line in out.stdout.splitlines() if "UUID" in line)
    marks = _server_marks(flow_run_id)
    points = [started, marks["Scheduled"], marks["Pending"], marks["Running"], marks["first stage"],
              marks["last stage"], marks["Completed"], ended]
    phases = {name: points[i + 1] - points[i] for i, name in enumerate(PHASES)}
    return phases | {"total": ended - started, "stages seen": marks["stages seen"]}


def _server_marks(flow_run_id: str) -> dict[str, float]:
    """Timestamps of the flow run's states and of its first and last stage decision (the task loggers' lines)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC)
    marks = {s.type.value.capitalize(): s.timestamp.timestamp() for s in states}
    decisions = [log.timestamp.timestamp() for log in logs if log.task_run_id and ": " in log.message
                 and log.message.split(": ", 1)[1].startswith(("unchanged", "disabled", "running"))]
    if not decisions:
        raise SystemExit(f"flow run {flow_run_id} logged no stage decision: is this the llm-lifecycle flow?")
    return marks | {"first stage": decisions[0], "last stage": decisions[-1], "stages seen": len(decisions)}


def table(rows: list[dict[str, float]]) -> str:
    keys = [*PHASES, "total"]
    lines = ["| run | " + " | ".join(keys) + " | stages |", "|---" * (len(keys) + 2) + "|"]
    for i, row in enumerate(rows, 1):
        lines.append(f"| {i} | " + " | ".join(f"{row[k]:.1f}" for k in keys) + f" | {row['stages seen']} |")
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    lines.append("| median | " + " | ".join(f"{median[k]:.1f}" for k in keys) + " | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployment", default="llm-lifecycle/full")
    parser.add_argument("--stages", nargs="*", default=[], help="only these stages (all when not given)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit('PREFECT_API_URL is not set: eval "$(llm-lifecycle stack env)" first')
    rows = [run_once(args.deployment, args.stages, args.timeout) for _ in range(args.runs)]
    print(f"{args.deployment}, seconds per phase (load {os.getloadavg()[0]:.2f}):\n")
    print(table(rows))


if __name__ == "__main__":
    main()
