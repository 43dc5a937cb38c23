"""The evaluate items and the report stage through the in-process flow (real Prefect, DVC, MLflow, GX, the tiny
preset's evaluation), in a fresh workspace whose models and mix are made directly (two small untrained models,
a few mix documents) instead of by the pipeline: seconds, not minutes."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_workspace
from tests.integration.test_pipeline import run, stage_runs
from tests.unit.test_evaluate import make_model

pytestmark = pytest.mark.usefixtures("prefect_api")

EVALUATIONS = ["evaluate@base", "evaluate@sft", "evaluate@dpo", "evaluate@ppo"]
ALIGNMENT_OFF = {"dpo.enabled": False, "ppo.enabled": False}  # no data/dpo, data/ppo: skip their evaluations
MIX_DOCUMENT = "A document of the pretraining mix, which no held-out text set may contain."


@pytest.fixture
def ws(tmp_path, workspace_env) -> Path:
    ws = workspace_env(make_workspace(tmp_path / "ws"))
    # a 512-token vocabulary spells the longest MMLU answer in ~450 tokens: the window must hold every answer
    make_model(ws / "data/pretrain", seq_len=512, seed=1)
    make_model(ws / "data/sft", seq_len=512, seed=2)
    (ws / "data/mix").mkdir()
    pd.DataFrame({"id": ["wikipedia/0", "c4/7"], "text": ["Anarchism is a political philosophy.", MIX_DOCUMENT],
                  "epoch": [0, 0]}).to_parquet(ws / "data/mix/pretrain-00000.parquet")
    return ws


def register_as_its_stage_does(ws: Path, stage: str, name: str) -> None:
    """A finished run of `stage` that produced data/<stage> at the md5 the evaluation read (dvc.lock) and registered
    it as a version of `name`: what the pretrain and sft stages leave behind."""
    from tasks import tracking
    from tasks.dag import Workspace

    folder = f"data/{stage}"
    evaluation = {"pretrain": "evaluate@base", "sft": "evaluate@sft"}[stage]
    md5 = next(dep["md5"] for dep in Workspace(ws).lock_entry(evaluation)["deps"] if dep["path"] == folder)
    run_id = tracking.start_run(ws, stage, {"kind": "stage", "stage": stage, f"output.{folder}": md5})
    tracking.RunHandle(run_id).register_model(ws / folder, name, {}, description=f"{stage} model")
    tracking.end_run(run_id, ok=True)


def test_each_model_is_scored_once_and_the_report_card_gathers_them_into_the_registry(ws):
    from tasks.tracking import client

    outcomes, states = run(stages=EVALUATIONS, overrides=ALIGNMENT_OFF)
    assert states == {"evaluate@base": "Completed", "evaluate@sft": "Completed", "evaluate@dpo": "Skipped",
                      "evaluate@ppo": "Skipped"}
    by_stage = {o["stage"]: o for o in outcomes}
    assert by_stage["evaluate@dpo"]["reason"] == ("disabled: reads data/dpo from dpo, disabled (dpo.enabled: false "
                                                  "in the parameters)")

    # every number of the tiny preset, with what it takes to read it
    scores = pd.read_parquet(ws / "data/evaluate/base/scores.parquet")
    assert set(scores["model"]) == {"base"} and (scores["n"] > 0).all() and scores["value"].map(math.isfinite).all()
    assert set(scores["measure"]) == {"bpb", "perplexity", "acc", "acc_norm", "contamination_p"}
    assert set(scores.loc[scores["measure"] == "contamination_p", "task"]) == {"arc_easy"}  # on one task only
    choice = scores[scores["formulation"] != ""]
    assert set(choice["formulation"]) == {"cloze", "letter"} and set(choice["shots"]) == {0, 3}
    assert set(choice["task"]) == {"arc_easy", "hellaswag", "mmlu_redux", "copa"} and (choice["chance"] > 0).all()
    assert set(choice.loc[choice["task"] == "mmlu_redux", "subset"]) == {"all", "ok"}
    assert (scores["items_digest"] != "").all() and (choice["prompt_digest"] != "").all()
    bpb = scores.set_index(["measure", "task"])["value"][("bpb", "cc_heldout")]
    base = by_stage["evaluate@base"]["metrics"]
    assert base["cc_heldout/bpb"] == pytest.approx(bpb) and base["arc_easy/cloze/3-shot/acc_norm"] >= 0
    assert not (ws / "data/evaluate/dpo").exists()
    run_artifacts = {a.path for a in client().list_artifacts(by_stage["evaluate@base"]["run_id"], "reports")}
    assert {"reports/report.md", "reports/scores.png", "reports/bpb.png", "reports/validation.json"} <= run_artifacts

    register_as_its_stage_does(ws, "pretrain", "llm-lifecycle-base")
    register_as_its_stage_does(ws, "sft", "llm-lifecycle-sft")
    outcomes, states = run(stages=[*EVALUATIONS, "report"], overrides=ALIGNMENT_OFF)
    assert states == {**dict.fromkeys(EVALUATIONS, "Skipped"), "report": "Completed"}  # nothing re-scored
    report = next(o for o in outcomes if o["stage"] == "report")
    table = pd.read_parquet(ws / "data/report/scores.parquet")
    assert set(table["model"]) == {"base", "sft"} and len(table) == 2 * len(scores)
    card = (ws / "data/report/report.md").read_text()
    assert "| base | sft |" in card and (ws / "data/report/report.csv").exists()
    assert report["metrics"]["base/cc_heldout/bpb"] == pytest.approx(bpb) and report["metrics"]["models"] == 2
    assert report["reports"] == ["report.md"]  # what the pipeline summary links
    assert {"reports/report.md", "reports/report.csv", "reports/scores.png", "reports/bpb.png",
            "report_card.json"} <= {a.path for a in client().list_artifacts(report["run_id"])} | {
        a.path for a in client().list_artifacts(report["run_id"], "reports")}
    version = client().get_model_version("llm-lifecycle-base", "1")  # the registry shows what each version scores
    assert float(version.tags["llm.score.cc_heldout/bpb"]) == pytest.approx(bpb, rel=1e-3)
    assert version.tags["llm.scored_by"] == report["run_id"]
    assert "llm.score.arc_easy/contamination_p" in client().get_model_version("llm-lifecycle-sft", "1").tags
    printed = subprocess.run([Path(sys.executable).parent / "llm-lifecycle", "report"], cwd=ws, capture_output=True,
                             text=True, check=True).stdout
    assert printed.strip() == card.strip()

    _, states = run(stages=[*EVALUATIONS, "report"], overrides=ALIGNMENT_OFF)
    assert set(states.values()) == {"Skipped"}
    assert len(stage_runs("evaluate@base")) == len(stage_runs("report")) == 1


def test_held_out_text_found_in_the_mix_is_refused(ws, tmp_path):
    (tmp_path / "leaky.txt").write_text(f"{MIX_DOCUMENT}\nA sentence that is nowhere in the mix.\n")
    leaky = [{"name": "leaky", "format": "lines", "domain": None, "uri": str(tmp_path / "leaky.txt")}]
    outcome, states = run(stages=["evaluate@base"], overrides={"evaluate.text_sets": leaky})
    assert states == {"evaluate@base": "Failed"}
    assert "eval text in the training documents: leaky (1 of 2 documents)" in str(outcome)
    assert not (ws / "data/evaluate/base").exists()
