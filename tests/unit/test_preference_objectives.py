"""The reward-model and DPO objectives on the DeepSpeed engine: on preferences that are learnable by
construction they learn (held-out reward accuracy > 0.95, DPO reward accuracy > 0.9), the exported reward
model loads with AutoModelForSequenceClassification and gives the same scores, and kill -9 resume gives the
uninterrupted losses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.model import ModelParams, build_model
from components.tokenizer import tokenizer_digest
from components.train import TrainConfig
from components.train.objectives.dpo import REFERENCE, dpo_loss, reference_logps
from components.train.objectives.pairs import read_pairs
from components.train.objectives.reward import bradley_terry
from interrupt import kill_after_checkpoint
from test_train import ROOT, finish, launch, losses  # the rank-launching helpers of the pretraining test

VOCAB, SEQ, PAD, EOT, IM_END = 256, 64, 2, 1, 4
GOOD, BAD = np.arange(20, 40), np.arange(60, 80)  # chosen replies use only GOOD ids, rejected only BAD ones


def pair(rng) -> dict:
    prompt = [3, *rng.integers(100, 200, size=rng.integers(3, 8)), IM_END, 5]
    replies = {}
    for side, alphabet in (("chosen", GOOD), ("rejected", BAD)):
        reply = [*rng.choice(alphabet, size=rng.integers(3, 10)), IM_END, EOT]
        replies[f"{side}_ids"] = prompt + reply
        replies[f"{side}_mask"] = [0] * len(prompt) + [1] * len(reply)
    return replies


def write_pairs(folder: Path, base: Path, count: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", count), ("val", 32)):
        rows = [pair(rng) for _ in range(n)]
        pq.write_table(pa.table({key: [r[key] for r in rows] for key in rows[0]}), folder / f"pairs-{split}.parquet")
    (folder / "manifest.json").write_text(json.dumps({"tokenizer_digest": tokenizer_digest(base), "vocab_size": VOCAB}))
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sft_model")
    build_model(ModelParams(depth=2, aspect_ratio=32, head_dim=32, seq_len=SEQ), VOCAB, 0, EOT, PAD,
                seed=1).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_dir(base, tmp_path_factory) -> Path:
    folder = write_pairs(tmp_path_factory.mktemp("preferences"), base)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    for split in ("train", "val"):  # what the dpo stage computes once before training
        np.save(folder / REFERENCE.format(split=split), reference_logps(model, read_pairs(folder, split), PAD))
    return folder


def config_file(base: Path, data: Path, ckpt: Path, objective: str, **overrides) -> Path:
    cfg = {"objective": objective, "init_from": str(base), "model": {"depth": 2, "aspect_ratio": 32, "head_dim": 32,
           "seq_len": SEQ}, "vocab_size": VOCAB, "tokenizer_digest": tokenizer_digest(base), "token_dir": str(data),
           "ckpt_dir": str(ckpt), "steps": 12, "micro_batch": 4, "grad_accum": 2, "lr": 1e-3, "warmup": 2,
           "zero_stage": 2, "bf16": False, "keep_last": 2, "seed": 3, "log_every": 1, "pad_id": PAD,
           "eos_id": EOT, **overrides}
    path = ckpt.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    return path


def launch_one(cfg: Path) -> subprocess.Popen:
    """One rank: the learning tests need steps, not ranks (the resume tests use two)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                             "-m", "components.train.run", str(cfg)], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_losses_at_known_values():
    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(bradley_terry(chosen, rejected), torch.log1p(torch.exp(-(chosen - rejected))))
    assert torch.allclose(bradley_terry(chosen, rejected, margin=1.0), torch.log1p(torch.exp(-(chosen - rejected - 1))))
    assert torch.allclose(bradley_terry(chosen, rejected, center_coef=0.5),
                          torch.log1p(torch.exp(-(chosen - rejected))) + 0.5 * (chosen + rejected) ** 2)
    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    logits = (pc - rc) - (pr - rr)  # 1.5
    assert dpo_loss(pc, pr, rc, rr, beta=0.1).item() == pytest.approx(np.log1p(np.exp(-0.15)))
    assert dpo_loss(pc, pr, rc, rr, beta=0.1, loss="ipo").item() == pytest.approx((1.5 - 5) ** 2)
    smoothed = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2).item()
    assert smoothed == pytest.approx(0.8 * np.log1p(np.exp(-0.15)) + 0.2 * np.log1p(np.exp(0.15)))
    assert logits.item() == 1.5


def test_reward_model_learns_a_learnable_preference_and_exports_for_transformers(base, pairs_dir, tmp_path):
    ckpt = tmp_path / "rm"
    result = finish(launch_one(config_file(base, pairs_dir, ckpt, "reward", steps=40, lr=3e-3, val_batches=8)),
                    timeout=300)
    assert result["val_accuracy"] > 0.95, result
    from transformers import AutoModelForSequenceClassification

    from components.train.export import load_trained

    trained = load_trained(TrainConfig(**json.loads((tmp_path / "rm.json").read_text())))  # from the ZeRO shards
    trained.save_pretrained(tmp_path / "out")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    batch = read_pairs(pairs_dir, "val").take(np.arange(8), PAD)
    with torch.no_grad():
        ours = trained(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        theirs = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, theirs, atol=1e-5) and ours.shape == (16, 1)
    chosen, rejected = theirs.squeeze(-1).chunk(2)
    assert (chosen > rejected).float().mean() > 0.9


def test_dpo_learns_a_learnable_preference(base, pairs_dir, tmp_path):
    ckpt = tmp_path / "dpo"
    result = finish(launch_one(config_file(base, pairs_dir, ckpt, "dpo", steps=30, lr=3e-3, val_batches=8,
                                           options={"beta": 0.1})), timeout=300)
    assert result["val_rewards/accuracies"] > 0.9 and result["val_rewards/margins"] > 0, result
    rows = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"} <= set(rows[0])
    assert abs(rows[0]["rewards/margins"]) < 0.05  # the policy starts as the reference: no margin yet


@pytest.mark.heavy
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills ranks through /proc")
@pytest.mark.parametrize("objective", ["reward", "dpo"])
def test_resume_after_kill_9_gives_the_uninterrupted_losses(objective, base, pairs_dir, tmp_path):
    whole = tmp_path / "whole"
    finish(launch(config_file(base, pairs_dir, whole, objective)), timeout=300)
    expected = losses(whole)
    broken = tmp_path / "broken"
    proc = launch(config_file(base, pairs_dir, broken, objective, ckpt_every=4, step_pause_s=0.5))
    kill_after_checkpoint(proc, broken)
    assert max(losses(broken)) < 12
    assert finish(launch(config_file(base, pairs_dir, broken, objective, ckpt_every=4)), timeout=300)["resumed_from"] == 8
    got = losses(broken)
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], abs=5e-7), (step, got[step], expected[step])
