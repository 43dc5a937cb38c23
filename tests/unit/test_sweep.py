"""The scaling sweep's plan and its hand-off to pretraining: isoFLOP points, the nearest depth, and the
recommended size written as the `scaled` preset."""
from __future__ import annotations

import pytest
import yaml

from components.model import ModelParams
from components.scaling.sweep import matmul_params, nearest_depth, plan_sweep
from tasks.dag import Workspace
from tasks.params import SCALED_FILE, ParamsError, resolve
from tests.conftest import make_workspace

MODEL = ModelParams(depth=1, aspect_ratio=16, head_dim=16, seq_len=256)


def test_every_point_spends_its_budget_in_whole_steps():
    rows = plan_sweep([3e11, 1.2e12], [1, 2, 3, 4], MODEL, 4096, tokens_per_step=2048)
    assert [(r["budget"], r["depth"]) for r in rows] == [(b, d) for b in (3e11, 1.2e12) for d in (1, 2, 3, 4)]
    for row in rows:
        assert row["tokens"] == row["steps"] * 2048 and row["flops"] == 6 * row["params"] * row["tokens"]
        assert abs(row["flops"] - row["budget"]) <= 6 * row["params"] * 2048 / 2  # within half a step
    assert [r["params"] for r in rows[:4]] == sorted(r["params"] for r in rows[:4])  # deeper is bigger
    short = plan_sweep([3e11], [1, 12], MODEL, 4096, tokens_per_step=2048, min_steps=10)
    assert [r["depth"] for r in short] == [1]  # depth 12 would get 5 steps: all warmup, no information


def test_nearest_depth_is_nearest_in_log_size():
    sizes = {d: matmul_params(MODEL.model_copy(update={"depth": d}), 4096) for d in (2, 3)}
    assert nearest_depth(sizes[3] * 1.05, MODEL, 4096) == 3
    assert nearest_depth((sizes[2] * sizes[3]) ** 0.5 * 0.99, MODEL, 4096) == 2


def test_the_scaled_preset_overlays_the_sweeps_preset(tmp_path, monkeypatch):
    monkeypatch.delenv("LLM_LIFECYCLE_DATA_DIR", raising=False)
    ws = Workspace(make_workspace(tmp_path / "ws"))
    with pytest.raises(ParamsError, match="run `llm-lifecycle scaling`"):
        resolve(ws, "scaled")
    (ws.root / SCALED_FILE).write_text(yaml.safe_dump({"based_on": "gpu", "pretrain": {
        "model": {"depth": 3, "aspect_ratio": 16, "head_dim": 16}, "steps": 42, "scaling_run": "abc123"}}))
    scaled, gpu = resolve(ws, "scaled"), resolve(ws, "gpu")
    assert scaled["pretrain"]["model"]["depth"] == 3 and scaled["pretrain"]["steps"] == 42
    assert scaled["pretrain"]["scaling_run"] == "abc123"  # the lineage of the choice, in dvc.lock and MLflow
    assert scaled["pretrain"]["model"]["seq_len"] == gpu["pretrain"]["model"]["seq_len"] == 2048  # from gpu
    assert scaled["tokenizer"] == gpu["tokenizer"]
