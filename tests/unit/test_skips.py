"""What a run decides before anything runs, with one DVC status for the whole plan: a stage is skipped up front
when it is disabled, or unchanged while nothing upstream of it in the plan runs; a stage downstream of one that
runs is left to be decided after its upstream ran."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tasks.dag import UNCHANGED, Workspace


def _stage(name: str, dep: str) -> dict:
    return {"cmd": f"mkdir -p data/{name} && cp -r {dep} data/{name}/", "deps": [dep], "outs": [f"data/{name}"]}


# mix → pretrain → sft, and curate on its own
STAGES = {"mix": _stage("mix", "src/mix"), "pretrain": _stage("pretrain", "data/mix"),
          "sft": _stage("sft", "data/pretrain"), "curate": _stage("curate", "src/curate")}
PARAMS = {"mix": {}, "pretrain": {}, "sft": {}, "curated": {}}
EVERY = list(STAGES)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A DVC repository whose every stage has run once (built once: `dvc repro` takes seconds)."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("skips")
    Repo.init(str(root), no_scm=True).close()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}, sort_keys=False))
    for source in ("src/mix", "src/curate"):
        (root / source).mkdir(parents=True)
        (root / source / "a.txt").write_text("one\n")
    with pytest.MonkeyPatch.context() as patch, Repo(str(root)) as repo:
        patch.chdir(root)  # DVC resolves a stage's paths from the working directory
        repo.reproduce()
    return root


@pytest.fixture
def ws(built, tmp_path, monkeypatch) -> Workspace:
    monkeypatch.chdir(shutil.copytree(built, tmp_path / "ws"))  # where the flow runs
    return Workspace(tmp_path / "ws")


def plan(ws: Workspace) -> list[str]:
    return [s.name for s in ws.stages]


def test_an_unchanged_dag_is_skipped_whole_up_front(ws):
    assert plan(ws) == ["mix", "pretrain", "sft", "curate"]
    assert ws.skips(plan(ws), PARAMS, force=False) == dict.fromkeys(EVERY, UNCHANGED)
    assert ws.skips(plan(ws), PARAMS, force=True) == {}


def test_what_reads_a_changed_stage_is_decided_after_it_runs(ws):
    (ws.root / "src/mix/a.txt").write_text("two\n")
    # pretrain and sft still match dvc.lock now, but mix will replace their input: not skipped up front
    assert ws.skips(plan(ws), PARAMS, force=False) == {"curate": UNCHANGED}
    assert ws.changes("mix").startswith("changed deps: src/mix")
    assert ws.changes("pretrain") is None
    # an upstream left out of the plan does not run, so its readers can be skipped
    assert ws.skips(["pretrain", "sft"], PARAMS, force=False) == {"pretrain": UNCHANGED, "sft": UNCHANGED}


def test_disabled_stages_are_skipped_with_their_reason_even_when_forced(ws):
    off = PARAMS | {"pretrain": {"enabled": False}}
    skips = ws.skips(plan(ws), off, force=True)
    assert skips["pretrain"] == "disabled (pretrain.enabled: false in the parameters)"
    assert skips["sft"].startswith("disabled: reads data/pretrain from pretrain") and set(skips) == {"pretrain", "sft"}


def test_a_stage_never_run_is_not_skipped(ws):
    lock = ws.root / "dvc.lock"
    stages = yaml.safe_load(lock.read_text())
    del stages["stages"]["curate"]
    lock.write_text(yaml.safe_dump(stages))
    assert "curate" not in ws.skips(plan(ws), PARAMS, force=False)
    assert ws.changes("curate") == "first run (no entry in dvc.lock)"


def test_the_stage_graph_is_read_again_when_dvc_yaml_changes(ws):
    assert plan(ws) == EVERY
    extra = dict(STAGES, clean=_stage("clean", "data/curate"))
    (ws.root / "dvc.yaml").write_text(yaml.safe_dump({"stages": extra}, sort_keys=False))
    assert plan(Workspace(ws.root)) == [*EVERY, "clean"]
    assert plan(ws) == EVERY  # one Workspace keeps what it read
