"""kill -9 of a stage mid-write: the published output is the old one, whole; `dvc status` and dvc.lock agree with
the disk; the next run reruns exactly that stage and what reads it."""
from __future__ import annotations

import time

import pytest

from tests.faults.conftest import CHEAP, WORKSPACE_TESTS, kill_when_writing

pytestmark = WORKSPACE_TESTS

# stage → a parameter change that makes it (and what reads it) rerun with a different output, and a stage beside it
# that must not rerun
KILLS = {
    "ingest": ("crawl.shard_records=10", "curate"),  # ten-record shards: several files, written one after another
    "clean": ("clean.quality.keep_fraction=0.7", "curate"),
    "tokenize": ("tokenize.shard_tokens=20000", "tokenizer"),
    "pretrain": ("pretrain.warmup=10", "tokenize"),  # fewer steps would fail the gate (val bpb above unigram)
}


@pytest.mark.parametrize("stage", ["ingest", "clean", "tokenize", "pretrain"])
def test_kill_mid_write_keeps_the_old_output_and_the_next_run_redoes_exactly_that_stage(copy_of, stage):
    change, bystander = KILLS[stage]
    ws = copy_of(*CHEAP, stage)
    out = f"data/{stage}"
    before = ws.snapshot(out)
    ws.params(change)

    ran_s = kill_when_writing(ws.start("--single-item", stage), ws.root / out)

    assert ws.snapshot(out) == before, f"{out} is not the old output after a kill -9 {ran_s:.0f} s in"
    assert not [s for s in ws.changed(stage)[stage] if isinstance(s, dict) and "changed outs" in s], (
        f"dvc.lock no longer matches {out} on disk after the kill: {ws.changed(stage)}")

    started = time.monotonic()
    ran, _ = ws.repro("--single-item", stage)  # the killed run's staging folder and DVC lock are no obstacle
    recovery_s = time.monotonic() - started
    assert ran == [stage] and ws.snapshot(out) != before
    assert not list((ws.root / "data").glob(f".staging-{stage}-*"))
    readers = built_readers(ws, stage)  # none in the default run, where only ingest and curate are built
    assert set(ws.changed(stage, *readers, bystander)) == set(readers), (
        "after the rerun, exactly the stages reading its new output are due, and no other")
    print(f"\n{stage}: killed {ran_s:.1f} s into its run; rerun in {recovery_s:.1f} s")  # for docs/reliability.md


def built_readers(ws, stage: str) -> list[str]:
    """The stages reading `stage`'s output that have run in this workspace."""
    from tasks.dag import Workspace

    workspace = Workspace(ws.root)
    return [s.name for s in workspace.stages if stage in s.upstream and workspace.lock_entry(s.name)]
