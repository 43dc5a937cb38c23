"""What a user sees when a pipeline run fails: the failed stage, its last error lines, where the full log is,
and a hint when the cause is known (offline, a data gate, the workspace lock).

One summary for both ways of running: `llm-lifecycle run` passes the exception it caught; `infra/main.sh`
(a deployment on the stack's worker) passes the flow run's id, whose Prefect state message holds the same
exception text (`Flow run encountered an exception: StageFailed: stage 'ingest' failed ...`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.dag import Workspace
from tasks.params import DATA_DIR_ENV

LAST_LINES = 12
_STAGE_FAILED = re.compile(r"stage '(?P<stage>[^']+)' failed \(exit code (?P<code>\w+)\):\n")
_LOCK_HELD = "another pipeline run holds the workspace lock"
# getaddrinfo's words for a host that does not resolve, and the kernel's for no route: the machine is offline
# (or the URL's host is wrong); a refused connection is left out: that is a server down, not the network.
_OFFLINE = re.compile(r"Name or service not known|Temporary failure in name resolution|nodename nor servname"
                      r"|No address associated with hostname|getaddrinfo failed|Network is unreachable")
_DVC_NOISE = re.compile(r"^(Running stage '|> llm-lifecycle stage |ERROR: failed to reproduce )")


@dataclass(frozen=True)
class Failure:
    stage: str | None  # None: the run failed outside a stage (the lock, the parameters, dvc push)
    lines: list[str]
    log: str
    hint: str | None

    def render(self) -> str:
        where = f"stage {self.stage!r} failed" if self.stage else "the pipeline run failed before or after its stages"
        text = [f"{where}; its last error lines:", *(f"  {line}" for line in self.lines), f"full log: {self.log}"]
        return "\n".join(text + ([f"hint: {self.hint}"] if self.hint else []))


def summarize(error: str, log: str, ws: Workspace) -> Failure:
    """The failure an error text (an exception's str, or a Prefect state message) describes."""
    found = _STAGE_FAILED.search(error)
    stage = found.group("stage") if found else None
    body = error[found.end():] if found else error
    lines = [line for line in body.strip().splitlines() if line.strip() and not _DVC_NOISE.match(line)]
    return Failure(stage, lines[-LAST_LINES:], log, _hint(error, stage, found and found.group("code"), ws))


def _hint(error: str, stage: str | None, exit_code: str | None, ws: Workspace) -> str | None:
    from tasks.stage import EXIT_GATE_FAILED

    if _OFFLINE.search(error):
        return (f"a source's host does not resolve: this machine looks offline. Set {DATA_DIR_ENV} to a folder "
                f"holding the sources' `offline:` files (e.g. {DATA_DIR_ENV}=../shared/data bash infra/main.sh); "
                "every source with an `offline:` path in params.yaml is then read from there")
    if stage and exit_code == str(EXIT_GATE_FAILED):
        failed = failed_expectations(ws.root / ws.stage(stage).report_dir / "validation.json")
        listed = "".join(f"\n  - {f}" for f in failed) or " (see the error lines above)"
        return (f"the output of {stage!r} failed its data gate and was not published; the expectations that "
                f"failed:{listed}\nFix the stage's sources or filters (params.yaml), then run again")
    if _LOCK_HELD in error:
        holder = re.search(r"holds the workspace lock \S+ \((?P<who>[^)]*)\)", error)
        who = holder.group("who") if holder else "unknown"
        return (f"the workspace is locked by another pipeline run ({who}); wait for it to finish, or queue "
                "behind it: `llm-lifecycle run --wait SECONDS` (deployments: the lock_wait_s parameter)")
    return None


def failed_expectations(validation_file: Path) -> list[str]:
    """One line per failing expectation or check in a stage's validation.json."""
    if not validation_file.exists():
        return []
    lines = []
    for pattern, result in json.loads(validation_file.read_text()).items():
        if result.get("error"):
            lines.append(f"{pattern}: {result['error']}")
        for shard in result.get("shards", []):
            for f in shard.get("failures", []):
                on = f" on {f['column']}" if f.get("column") else ""
                count = f", {f['unexpected_count']} of {f['element_count']} rows" if f.get("unexpected_count") else ""
                lines.append(f"{shard['shard']}: {f['expectation']}{on}{count}; e.g. {f.get('examples', [])[:3]}")
        for check in result.get("checks", []):
            if not check.get("success", True):
                lines.append(f"{pattern}: {check['check']} on {check['column']}: {check.get('duplicates')} duplicates")
    return lines


def from_flow_run(flow_run_id: str | None, ws: Workspace) -> Failure:
    """The failure of a flow run on the Prefect API (default: the latest failed run of the pipeline flow)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        if flow_run_id:
            try:
                run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                raise LookupError(f"no flow run {flow_run_id} on this Prefect API") from None
            if not (run.state.is_failed() or run.state.is_crashed()):
                raise LookupError(f"flow run {flow_run_id} did not fail: it is {run.state.name}")
        else:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["llm-lifecycle"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED]))),
                sort=FlowRunSort.START_TIME_DESC, limit=1)
            if not runs:
                raise LookupError("no failed run of the llm-lifecycle flow on this Prefect API")
            run = runs[0]
    log = (f"`prefect flow-run logs {run.id}` (with the stack's environment: eval \"$(llm-lifecycle stack env)\"); "
           f"the worker's output: {ws.state_dir / 'stack' / 'worker.log'}")
    return summarize(run.state.message or f"flow run ended {run.state.name} with no message", log, ws)
