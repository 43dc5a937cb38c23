"""PPO on the engine: GAE and the clipped losses at hand-computed values, the adaptive KL controller, a reward
that is learnable by construction goes up while the KL stays bounded, and kill -9 resume gives identical
rollouts and losses."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.tokenizer import tokenizer_digest
from components.train.objectives.ppo import adapt_kl, gae, ppo_losses, whiten
from test_preference_objectives import launch_one
from interrupt import kill_after_checkpoint
from test_train import finish, launch, losses
from tests.integration.test_serve import model_dir  # noqa: F401  (a tiny chat model folder with its tokenizer)

SEQ = 128


def test_gae_and_the_clipped_losses_at_hand_computed_values():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    values = torch.tensor([[0.0, 0.5, 1.0, 1.5]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # position 0 is prompt
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d3 = 2.0 - 1.5  # the last reply token: no value after it
    d2 = 0.0 + 0.9 * 1.5 - 1.0
    d1 = 1.0 + 0.9 * 1.0 - 0.5
    a3, a2 = d3, d2 + 0.45 * d3
    a1 = d1 + 0.45 * a2
    assert torch.allclose(advantages, torch.tensor([[0.0, a1, a2, a3]]))
    assert torch.allclose(returns, torch.tensor([[0.0, a1 + 0.5, a2 + 1.0, a3 + 1.5]]))
    white = whiten(advantages, mask)
    assert white[0, 0] == 0 and abs(white[mask > 0].mean()) < 1e-6

    old, new = torch.tensor([[0.0, -1.0, -1.0]]), torch.tensor([[0.0, -0.5, -1.5]])
    adv, m = torch.tensor([[0.0, 1.0, -1.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    ratio = np.exp([0.5, -0.5])  # 1.6487 (clipped to 1.2), 0.6065 (clipped to 0.8)
    # token 1: max(-1·1.649, -1·1.2) = -1.2; token 2: max(1·0.607, 1·0.8) = 0.8
    v, old_v, ret = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.5, 0.5]]), torch.tensor([[0.0, 2.0, 0.0]])
    # values: token 1 clipped to 0.7: max(1, 1.69) = 1.69; token 2 clipped to 0.3: max(0, 0.09) = 0.09
    out = ppo_losses(new, old, adv, v, old_v, ret, m, clip=0.2, clip_value=0.2)
    assert out["policy"].item() == pytest.approx((-1.2 + 0.8) / 2)
    assert out["value"].item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    assert out["clipfrac"].item() == 1.0 and out["approx_kl"].item() == pytest.approx(0.5 * 0.25)
    assert ratio[0] > 1.2 and ratio[1] < 0.8


def test_adaptive_kl_steers_towards_the_target():
    assert adapt_kl(0.1, kl=12.0, target=6.0, horizon=100, samples=10) == pytest.approx(0.1 * 1.02)  # capped +20%
    assert adapt_kl(0.1, kl=3.0, target=6.0, horizon=100, samples=10) == pytest.approx(0.1 * 0.98)
    assert adapt_kl(0.1, kl=6.0, target=6.0, horizon=100, samples=10) == 0.1


def write_prompts(folder: Path, model: Path) -> Path:
    """Preference-stage output with only what PPO reads: the prompts, and the manifest's tokenizer digest."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("val", 8)):
        prompts = [json.dumps([{"role": "user", "content": f"Tell me about the {w} fox number {i}."}])
                   for i, w in zip(range(n), ["quick", "brown", "lazy", "warm"] * n)]
        pq.write_table(pa.table({"prompt": prompts}), folder / f"pairs-{split}.parquet")
    (folder / "manifest.json").write_text(json.dumps({"tokenizer_digest": tokenizer_digest(model), "vocab_size": 512}))
    return folder


def config_file(model: Path, data: Path, ckpt: Path, **overrides) -> Path:
    options = {"rule_reward": "token_share:100-164", "missing_stop_reward": None, "max_new_tokens": 16,
               "minibatches": 2, "ppo_epochs": 2, "kl_coef": 0.02, "adaptive_kl": False, "stop_token_ids": [4, 1],
               **overrides.pop("options", {})}
    cfg = {"objective": "ppo", "init_from": str(model), "model": {"depth": 2, "aspect_ratio": 32, "head_dim": 16,
           "seq_len": SEQ}, "vocab_size": 512, "tokenizer_digest": tokenizer_digest(model), "token_dir": str(data),
           "ckpt_dir": str(ckpt), "steps": 12, "micro_batch": 4, "grad_accum": 1, "lr": 2e-3, "warmup": 0,
           "schedule": "cosine", "min_lr_ratio": 1.0, "zero_stage": 2, "bf16": False, "keep_last": 2, "seed": 3,
           "log_every": 1, "ckpt_every": 4, "pad_id": 2, "eos_id": 1, "options": options, **overrides}
    path = ckpt.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def prompts(model_dir, tmp_path_factory) -> Path:  # noqa: F811
    return write_prompts(tmp_path_factory.mktemp("prompts"), model_dir)


@pytest.mark.heavy
def test_ppo_raises_a_learnable_reward_with_the_kl_bounded(model_dir, prompts, tmp_path):  # noqa: F811
    ckpt = tmp_path / "ppo"
    result = finish(launch_one(config_file(model_dir, prompts, ckpt, steps=60, ckpt_every=60, val_batches=2)),
                    timeout=600)
    rows = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    rollouts = [row["reward"] for row in rows if row["step"] % 4 == 1]  # one row per rollout
    early, late = np.mean(rollouts[:4]), np.mean(rollouts[-4:])
    assert early < 0.2 and late > early + 0.15, rollouts  # 64 of 512 ids: about 1/8 at the start
    # bounded: far below what a policy that ignored the reference could reach (16 tokens x ln 512 ≈ 100 nats)
    assert all(math.isfinite(row["kl"]) and row["kl"] < 25 for row in rows)
    assert {"clipfrac", "approx_kl", "entropy", "explained_variance", "value_loss", "beta", "stop_rate",
            "response_length", "rollout_tokens_per_s"} <= set(rows[-1])
    assert "val_reward" in result


@pytest.mark.heavy
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills ranks through /proc")
def test_ppo_resume_after_kill_9_gives_identical_rollouts_and_losses(model_dir, prompts, tmp_path):  # noqa: F811
    whole = tmp_path / "whole"
    finish(launch(config_file(model_dir, prompts, whole)), timeout=300)
    expected = {json.loads(line)["step"]: json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()}
    broken = tmp_path / "broken"
    proc = launch(config_file(model_dir, prompts, broken, step_pause_s=0.5))
    kill_after_checkpoint(proc, broken)
    assert max(losses(broken)) < 12
    assert finish(launch(config_file(model_dir, prompts, broken)), timeout=300)["resumed_from"] == 8
    got = {json.loads(line)["step"]: json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()}
    for step in range(1, 13):
        for key in ("loss", "reward", "kl"):  # the rollout (its rewards) and the update (its loss) both
            assert got[step][key] == pytest.approx(expected[step][key], abs=5e-6), (step, key)
