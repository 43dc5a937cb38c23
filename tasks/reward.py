"""Reward model: a scalar head on the SFT model, trained with the Bradley-Terry loss on the preference pairs
(the `reward` objective), exported for `AutoModelForSequenceClassification`, analysed on held-out pairs,
gated, and registered as `llm-lifecycle-reward` with its lineage.

The held-out report (components/reward) gives pairwise accuracy with a 95% bootstrap interval next to the
chance line, the reward gaps, accuracy by reply-length difference (does it just prefer longer replies?) and
calibration. At tiny scale on real human pairs the accuracy is near chance: reported, not gated; the gate
checks what must hold at any scale (the folder reloads with the same scores, the losses stayed finite).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from pydantic import Field

from components.train.objectives.options import RewardOptions as Options
from tasks.training import (CHECK_COLUMNS, FineTuneParams, base_model_dir, fine_tune_config, register_fine_tuned,
                            train_and_export, upstream_model)

SECTION = "reward"
GATES = {"checks.parquet": "reward_model"}
__all__ = ["GATES", "Params", "SECTION", "published", "run"]


class Params(FineTuneParams):
    registered_model: str = Field("llm-lifecycle-reward", description="MLflow Model Registry name")
    loss: Options = Options()
    min_accuracy: float | None = Field(None, ge=0, le=1, description="fail the gate below this held-out accuracy "
                                       "(None: report only; tiny models on real pairs sit near chance)")


def run(ctx, progress: bool = True) -> dict[str, float]:
    from components.reward import analyse, plot_analysis, score_pairs
    from components.train.objectives.pairs import read_pairs

    base = base_model_dir(ctx.params.base_model, ctx.inputs["sft"], ctx.state_dir)
    data = ctx.inputs["preferences"]
    cfg = fine_tune_config(ctx.params, "reward", data, base, ctx.state_dir, options=ctx.params.loss.model_dump())
    margin = ctx.params.loss.margin
    how = (f"Bradley-Terry loss −log σ(r_chosen − r_rejected{f' − {margin:g}' if margin else ''}) on a scalar "
           "head; the score is read at the last token. Loads with `AutoModelForSequenceClassification` (one label).")
    trained = train_and_export(ctx, cfg, "Reward model", how)
    val = read_pairs(data, "val")
    scored = score_pairs(ctx.out_dir, val, cfg.pad_id)
    analysis = analyse(scored)
    scored.to_csv(ctx.report_dir / "heldout_scores.csv", index=False)
    plot_analysis(scored, analysis, ctx.report_dir / "reward_analysis.png")
    (ctx.report_dir / "reward_report.md").write_text(_report(analysis), encoding="utf-8")
    held_out = {f"heldout_{key}": value for key, value in analysis["metrics"].items()}
    _checks(ctx.params, trained.model, val, cfg.pad_id, scored, trained.stats, held_out).to_parquet(
        ctx.out_dir / "checks.parquet", index=False)
    return {**{k: held_out.pop(k) for k in ("heldout_accuracy", "heldout_accuracy_low", "heldout_accuracy_high")},
            **held_out, **trained.stats, "steps": trained.result["steps"], "tokens": trained.result["tokens"],
            "world": trained.result["world"]}


def _report(analysis: dict) -> str:
    m = analysis["metrics"]
    return "\n".join([
        "# Reward model: held-out pairs", "",
        f"Pairwise accuracy **{m['accuracy']:.3f}** (95% bootstrap interval {m['accuracy_low']:.3f}–"
        f"{m['accuracy_high']:.3f}, {int(m['pairs'])} pairs); chance is {m['chance']:.2f}.", "",
        f"When the chosen reply is the longer one: {m['accuracy_chosen_longer']:.3f}; when it is the shorter one: "
        f"{m['accuracy_chosen_shorter']:.3f}. The model prefers the longer reply in {m['prefers_longer']:.0%} of "
        "pairs whose lengths differ: far above the accuracy, it is scoring length.", "",
        f"Calibration error (σ(gap) vs how often the chosen reply wins): {m['calibration_error']:.3f}.", "",
        "## Accuracy by length difference", "", analysis["by_length"].to_markdown(index=False), "",
        "## Calibration", "", analysis["calibration"].to_markdown(index=False), ""])


def _checks(params: Params, model, val, pad_id: int, scored: pd.DataFrame, stats: dict,
            held_out: dict) -> pd.DataFrame:
    """What the gate requires of the reward model: one row per check, `passed` True or False."""
    import torch

    from components.train.objectives.reward import scores

    count = min(len(val), 8)
    with torch.no_grad():
        chosen, rejected = scores(model.eval(), val.take(np.arange(count), pad_id))
    ours = torch.cat([chosen, rejected]).double().numpy()
    theirs = np.concatenate([scored["chosen"][:count], scored["rejected"][:count]])
    difference = float(np.abs(ours - theirs).max()) if count else math.nan
    rows = [("hf_reload_same_scores", difference < 1e-4, difference, 1e-4,
             "AutoModelForSequenceClassification.from_pretrained(output) gives the trained model's rewards"),
            ("losses_finite", stats["all_losses_finite"] == 1.0, stats["all_losses_finite"], 1.0,
             "no NaN or inf training loss")]
    if params.min_accuracy is not None:
        accuracy = held_out["heldout_accuracy"]
        rows.append(("heldout_accuracy", accuracy >= params.min_accuracy, accuracy, params.min_accuracy,
                     "held-out pairwise accuracy"))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def published(ctx, stage_run) -> None:
    """Registered as a version of `llm-lifecycle-reward`, tagged with the SFT version it started from."""
    metrics = json.loads((ctx.report_dir / "metrics.json").read_text())
    register_fine_tuned(ctx, stage_run, upstream_model(ctx.params, "sft"),
                        {"llm.heldout_accuracy": f"{metrics.get('heldout_accuracy', math.nan):.4f}"})
