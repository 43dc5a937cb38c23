"""DPO: the SFT model optimised directly on the preference pairs (the `dpo` objective), the SFT model as the
frozen reference; exported as a chat model, gated, and registered as `llm-lifecycle-dpo` with its lineage.

The reference log-probabilities are computed once, before the ranks start, into
`.llm-lifecycle/dpo/reference/<data and model digest>/` and read with the data. After training, the SFT and DPO
models answer the same held-out prompts: the mean reply length before and after is the length drift the
lecture warns about (preference data often favours longer replies, and DPO follows).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from components.storage import file_md5
from components.train.objectives.options import DpoOptions as Options
from tasks.sft import stop_token_ids
from tasks.training import (CHECK_COLUMNS, FineTuneParams, base_model_dir, chat_model_checks, fine_tune_config,
                            folder_digest, register_fine_tuned, train_and_export, upstream_model)

SECTION = "dpo"
GATES = {"checks.parquet": "dpo_model"}
__all__ = ["GATES", "Params", "SECTION", "published", "run"]


class Params(FineTuneParams):
    enabled: bool = Field(True, description="align with DPO (the pipeline skips the stage when false; PPO is the "
                          "other alignment method)")
    registered_model: str = Field("llm-lifecycle-dpo", description="MLflow Model Registry name")
    loss: Options = Options()
    eval_prompts: int = Field(32, ge=0, description="held-out prompts (preference val split) both models answer")
    max_new_tokens: int = Field(128, gt=0, description="reply budget of the length-drift check")


def run(ctx, progress: bool = True) -> dict[str, float]:
    base = base_model_dir(ctx.params.base_model, ctx.inputs["sft"], ctx.state_dir)
    data = ctx.inputs["preferences"]
    reference = write_reference(data, base, ctx.state_dir / "reference")
    options = ctx.params.loss.model_copy(update={"reference_dir": reference}).model_dump(mode="json")
    cfg = fine_tune_config(ctx.params, "dpo", data, base, ctx.state_dir, options=options)
    how = (f"DPO ({cfg.options['loss']}, β = {cfg.options['beta']:g}) against the frozen starting model, whose "
           "log-probabilities were computed once before training.")
    trained = train_and_export(ctx, cfg, "Direct preference optimisation", how, stop_token_ids(base))
    drift = _length_drift(ctx.params, data, base, ctx.out_dir, ctx.report_dir)
    checks = chat_model_checks(trained.model, ctx.out_dir, trained.stats, stop_token_ids(base))
    pd.DataFrame(checks, columns=CHECK_COLUMNS).to_parquet(ctx.out_dir / "checks.parquet", index=False)
    stats = dict(trained.stats)
    headline = {key: stats.pop(key) for key in ("val_rewards/accuracies", "val_rewards/margins", "val_loss")
                if key in stats}
    return {**headline, **drift, **stats, "steps": trained.result["steps"], "tokens": trained.result["tokens"],
            "world": trained.result["world"]}


def write_reference(data: Path, base: Path, root: Path) -> Path:
    """The reference model's log-probabilities of every pair, computed once per (data, model) and reused."""
    from components.model.load import load_pretrained
    from components.train.objectives.dpo import REFERENCE, reference_logps
    from components.train.objectives.pairs import read_pairs

    folder = root / f"{file_md5(data / 'manifest.json')[:12]}-{folder_digest(base)[:12]}"
    if all((folder / REFERENCE.format(split=split)).exists() for split in ("train", "val")):
        return folder
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    model = load_pretrained(AutoModelForCausalLM, base).eval()
    pad_id = model.config.pad_token_id
    for split in ("train", "val"):
        path = folder / REFERENCE.format(split=split)
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, reference_logps(model, read_pairs(data, split), pad_id))
        tmp.replace(path)  # a kill mid-write leaves no half file that looks complete
    print(f"reference log-probabilities of {base} in {folder}", flush=True)
    return folder


def _length_drift(params: Params, data: Path, base: Path, tuned: Path, report_dir: Path) -> dict[str, float]:
    from components.sft.behaviour import generate_replies, held_out_prompts, stop_rates, write_samples

    prompts = held_out_prompts(data, params.eval_prompts)
    if not prompts:
        return {}
    before = generate_replies(base, prompts, params.max_new_tokens)
    after = generate_replies(tuned, prompts, params.max_new_tokens)
    write_samples(before, report_dir / "samples_sft.jsonl")
    write_samples(after, report_dir / "samples_dpo.jsonl")
    after_rates, before_rates = stop_rates(after), stop_rates(before)
    return {"reply_tokens_before": before_rates["mean_reply_tokens"],
            "reply_tokens_after": after_rates["mean_reply_tokens"],
            "length_drift": after_rates["mean_reply_tokens"] - before_rates["mean_reply_tokens"],
            "stop_rate": after_rates["stop_rate"], "stop_rate_before": before_rates["stop_rate"]}


def published(ctx, stage_run) -> None:
    """Registered as a version of `llm-lifecycle-dpo`, tagged with the SFT version it started from."""
    metrics = json.loads((ctx.report_dir / "metrics.json").read_text())
    register_fine_tuned(ctx, stage_run, upstream_model(ctx.params, "sft"),
                        {"llm.val_reward_accuracy": f"{metrics.get('val_rewards/accuracies', math.nan):.4f}"})
