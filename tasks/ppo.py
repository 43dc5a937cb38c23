"""PPO: the SFT policy optimised against the reward model with a KL leash to itself frozen (the `ppo` objective
on the same DeepSpeed engine), exported as a chat model, checked, and registered as `llm-lifecycle-ppo`.

The science check after training: the SFT and the PPO policy answer the same held-out prompts (the preference
val split, never trained on) greedily; the reward model scores both; the mean score difference gets a paired
bootstrap interval. Reward, KL and reply length over the steps are plotted side by side, because PPO can buy
reward with length (the lecture's warning) and the plot must show it if it does.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from components.evaluate.stats import bootstrap
from components.train.objectives.options import PpoOptions as Options
from components.train.report import read_rows
from tasks.sft import stop_token_ids
from tasks.training import (CHECK_COLUMNS, FineTuneParams, base_model_dir, chat_model_checks, fine_tune_config,
                            register_fine_tuned, train_and_export, upstream_model)

SECTION = "ppo"
GATES = {"checks.parquet": "ppo_model"}
__all__ = ["GATES", "Params", "SECTION", "published", "run"]


class Params(FineTuneParams):
    enabled: bool = Field(True, description="align with PPO (the pipeline skips the stage when false; DPO is the "
                          "other alignment method)")
    registered_model: str = Field("llm-lifecycle-ppo", description="MLflow Model Registry name")
    rollouts: int = Field(10, gt=0, description="rollouts in the run; each is minibatches × ppo_epochs steps")
    ppo: Options = Field(Options(), description="the objective's settings; the stage fills reward_model (the reward "
                         "stage's model) and stop_token_ids (the chat template's)")
    eval_prompts: int = Field(32, ge=0, description="held-out prompts both policies answer for the science check")
    max_new_tokens: int = Field(64, gt=0, description="reply budget of the science check")


def run(ctx, progress: bool = True) -> dict[str, float]:
    policy = base_model_dir(ctx.params.base_model, ctx.inputs["sft"], ctx.state_dir)
    reward_model = ctx.inputs["reward"]
    options = ctx.params.ppo.model_copy(update={"reward_model": reward_model, "rule_reward": None,
                                                "stop_token_ids": stop_token_ids(policy)})
    steps = ctx.params.rollouts * options.steps_per_rollout
    cfg = fine_tune_config(ctx.params, "ppo", ctx.inputs["preferences"], policy, ctx.state_dir, steps=steps,
                           options=options.model_dump(mode="json"))
    how = (f"PPO against `{reward_model}` with a KL leash to the starting model (β from {options.kl_coef:g}, "
           f"{'adaptive, target ' + format(options.target_kl, 'g') if options.adaptive_kl else 'fixed'}): "
           f"{ctx.params.rollouts} rollouts × {options.minibatches} minibatches × {options.ppo_epochs} epochs.")
    trained = train_and_export(ctx, cfg, "Reinforcement learning from the reward model (PPO)", how,
                               stop_token_ids(policy))
    rows = read_rows(cfg.ckpt_dir / "metrics.jsonl")
    plot_curves(rows, options, ctx.report_dir / "ppo_curves.png")
    check = science_check(ctx.params, ctx.inputs["preferences"], policy, ctx.out_dir, reward_model, ctx.report_dir)
    last = [row for row in rows if "kl" in row][-max(1, options.minibatches * options.ppo_epochs):]
    check |= {"final_kl": float(np.mean([row["kl"] for row in last])), "final_beta": last[-1]["beta"],
              "final_reward": float(np.mean([row["reward"] for row in last]))}
    checks = chat_model_checks(trained.model, ctx.out_dir, trained.stats, stop_token_ids(policy))
    pd.DataFrame(checks, columns=CHECK_COLUMNS).to_parquet(ctx.out_dir / "checks.parquet", index=False)
    return {**check, **trained.stats, "steps": trained.result["steps"], "tokens": trained.result["tokens"],
            "world": trained.result["world"]}


def science_check(params: Params, data: Path, sft: Path, ppo: Path, reward_model: Path,
                  report_dir: Path) -> dict[str, float]:
    """The reward model's mean score of the PPO policy's held-out replies minus the SFT policy's, with a paired
    bootstrap interval; the reply lengths beside it."""
    from components.reward import score_replies
    from components.sft.behaviour import generate_replies, held_out_prompts, stop_rates, write_samples

    prompts = held_out_prompts(data, params.eval_prompts)
    if not prompts:
        return {}
    before = generate_replies(sft, prompts, params.max_new_tokens)
    after = generate_replies(ppo, prompts, params.max_new_tokens)
    write_samples(before, report_dir / "samples_sft.jsonl")
    write_samples(after, report_dir / "samples_ppo.jsonl")
    scores = [score_replies(reward_model, [g.prompt + [{"role": "assistant", "content": g.reply}] for g in side])
              for side in (before, after)]
    gain = scores[1] - scores[0]
    low, high = bootstrap(gain)
    return {"heldout_reward_gain": float(gain.mean()), "heldout_reward_gain_low": low,
            "heldout_reward_gain_high": high, "heldout_reward_sft": float(scores[0].mean()),
            "heldout_reward_ppo": float(scores[1].mean()),
            "reply_tokens_sft": stop_rates(before)["mean_reply_tokens"],
            "reply_tokens_ppo": stop_rates(after)["mean_reply_tokens"]}


def plot_curves(rows: list[dict], options: Options, path: Path) -> Path:
    """Reward (raw and with the KL term), KL with the controller's target, and reply length, over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if "reward" in row]
    steps = [row["step"] for row in rows]
    fig, (reward, kl, length) = plt.subplots(1, 3, figsize=(15, 4))
    reward.plot(steps, [r["reward"] for r in rows], label="reward model score")
    reward.plot(steps, [r["reward_with_kl"] for r in rows], label="score − β·KL")
    reward.set(xlabel="step", title="reward")
    reward.legend()
    kl.plot(steps, [r["kl"] for r in rows], color="#ee6677", label="KL(policy ‖ reference), nats per reply")
    if options.adaptive_kl:
        kl.axhline(options.target_kl, color="black", linestyle="--", label="target")
    kl.set(xlabel="step", title="KL to the reference")
    kl.legend()
    length.plot(steps, [r["response_length"] for r in rows], color="#228833")
    length.set(xlabel="step", ylabel="tokens", title="mean reply length (can PPO buy reward with length?)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def published(ctx, stage_run) -> None:
    """Registered as a version of `llm-lifecycle-ppo`, tagged with the SFT and reward model versions."""
    metrics = json.loads((ctx.report_dir / "metrics.json").read_text())
    register_fine_tuned(ctx, stage_run, upstream_model(ctx.params, "sft"), {
        "llm.reward_model": upstream_model(ctx.params.model_copy(update={"base_model": None}), "reward"),
        "llm.heldout_reward_gain": f"{metrics.get('heldout_reward_gain', math.nan):.4f}"})
