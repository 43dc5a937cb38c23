"""The stage graph read from dvc.yaml: a foreach stage is one stage per item, named as DVC names it, run by its
group's module and publishing where dvc.yaml says; a stage is disabled by its own params, or by an input that
only disabled stages make (but not by one that other stages fill too)."""
from __future__ import annotations

import pytest
import yaml

from tasks.dag import Input, Workspace
from tests.conftest import REPO

STAGES = {
    "mix": {"cmd": "true", "outs": ["data/mix"]},
    "pretrain": {"cmd": "true", "deps": ["data/mix"], "outs": ["data/pretrain"]},
    "sft": {"cmd": "true", "deps": ["data/pretrain"], "outs": ["data/sft"]},
    "dpo": {"cmd": "true", "deps": ["data/sft"], "outs": ["data/dpo"]},
    "evaluate": {"foreach": {"base": "pretrain", "sft": "sft", "dpo": "dpo"}, "do": {
        "cmd": "llm-lifecycle stage evaluate@${key}", "deps": ["data/${item}", "data/mix"],
        "outs": [{"data/evaluate/${key}": {"persist": True}}],
        "metrics": [{"reports/evaluate/${key}/metrics.json": {"cache": False}}]}},
    "report": {"cmd": "true", "deps": ["data/evaluate"], "outs": ["data/report"]},
}
SECTIONS = ["mix", "pretrain", "sft", "dpo", "evaluate", "report"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("dag")
    Repo.init(str(root), no_scm=True).close()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}, sort_keys=False))
    return Workspace(root)


def params(**sections) -> dict:
    return {section: sections.get(section, {}) for section in SECTIONS}


def test_foreach_items_are_stages_named_by_dvc_in_file_order(ws):
    assert [s.name for s in ws.stages] == ["mix", "pretrain", "sft", "dpo", "evaluate@base", "evaluate@sft",
                                          "evaluate@dpo", "report"]
    base = ws.stage("evaluate@base")
    assert (base.item, base.data_out, base.report_dir) == ("base", "data/evaluate/base", "reports/evaluate/base")
    assert base.inputs() == {"mix": "data/mix", "pretrain": "data/pretrain"}
    assert ws.module("evaluate@base").__name__ == "tasks.evaluate" and ws.module("evaluate@base").SECTION == "evaluate"
    plain = ws.stage("sft")
    assert (plain.item, plain.data_out, plain.report_dir) == (None, "data/sft", "reports/sft")
    # the report reads the folder that holds every evaluation: each item is an upstream, read through it
    assert ws.stage("report").reads == tuple(Input(f"evaluate@{key}", f"data/evaluate/{key}", "data/evaluate")
                                             for key in ("base", "dpo", "sft"))


def test_a_stage_reading_what_only_disabled_stages_make_is_disabled_with_their_reason(ws):
    assert ws.disabled(params()) == {}
    disabled = ws.disabled(params(dpo={"enabled": False}))
    assert disabled == {"dpo": "disabled (dpo.enabled: false in the parameters)",
                        "evaluate@dpo": "disabled: reads data/dpo from dpo, disabled (dpo.enabled: false in the "
                                        "parameters)"}  # the report still runs, on base and sft
    everything = ws.disabled(params(pretrain={"enabled": False}, dpo={"enabled": False}))
    assert set(everything) == {"pretrain", "sft", "dpo", "evaluate@base", "evaluate@sft", "evaluate@dpo", "report"}
    assert everything["report"].startswith("disabled: reads data/evaluate from evaluate@base, disabled: reads "
                                           "data/pretrain from pretrain")


def test_the_projects_evaluate_items_each_score_one_model_and_the_report_reads_them_all():
    from tasks.evaluate import MIX, model_read

    project = Workspace(REPO)
    items = [s for s in project.stages if s.name.startswith("evaluate@")]
    assert {s.item: model_read(s).folder for s in items} == {"base": "data/pretrain", "sft": "data/sft",
                                                              "dpo": "data/dpo", "ppo": "data/ppo"}
    assert all(MIX in s.upstream for s in items) and "reward" not in {model_read(s).stage for s in items}
    assert set(project.stage("report").upstream) == {s.name for s in items}
    assert [s.name for s in project.stages][-1] == "report"
