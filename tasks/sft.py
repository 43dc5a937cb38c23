"""Supervised fine-tuning: the base model trained on the SFT conversations with the `sft` objective on the
same DeepSpeed engine as pretraining, exported as a chat model, checked, and registered with its lineage.

The model starts from the pipeline's pretrained model (`data/pretrain`, the registered `llm-lifecycle-base`
version) or from any Hugging Face folder or hub id named in `sft.base_model`. The examples must have been
tokenized with that model's tokenizer (`sft_data.tokenizer`); the objective refuses them otherwise. As for
pretraining, checkpoints live in `.llm-lifecycle/sft/<run key>/` and a rerun of the same run resumes.

After training, both the base model and the fine-tuned one answer the same held-out prompts: the share of
replies that end with the chat template's `<|im_end|>` is the behaviour SFT must raise (the gate checks it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from pydantic import Field

from tasks.training import (CHECK_COLUMNS, FineTuneParams, base_model_dir, chat_model_checks, fine_tune_config,
                            register_fine_tuned, train_and_export, upstream_model)

SECTION = "sft"
GATES = {"checks.parquet": "sft_model"}
__all__ = ["GATES", "Params", "SECTION", "published", "run"]


class Params(FineTuneParams):
    registered_model: str = Field("llm-lifecycle-sft", description="MLflow Model Registry name")
    pack: bool = Field(True, description="several conversations per row, attention kept inside each")
    eval_prompts: int = Field(32, ge=0, description="held-out prompts (SFT val split) both models answer")
    max_new_tokens: int = Field(128, gt=0, description="reply budget of the behaviour check")
    stop_check_temperature: float = Field(
        1.0, ge=0, description="the behaviour check samples replies at this temperature (seeded; 0: greedy). A "
        "small model's greedy reply tends to loop on frequent tokens, so whether it ends its turn swung between "
        "0.0 and 0.78 with small changes to the tiny preset's data; sampling measures what the model learned")
    require_stop_rate_gain: bool = Field(True, description="the gate fails a model that ends its turn with "
                                         "<|im_end|> no more often than the base model did")


def run(ctx, progress: bool = True) -> dict[str, float]:
    base = base_model_dir(ctx.params.base_model, ctx.inputs["pretrain"], ctx.state_dir)
    cfg = fine_tune_config(ctx.params, "sft", ctx.inputs["sft_data"], base, ctx.state_dir, pack=ctx.params.pack)
    stops = stop_token_ids(base)
    how = ("Loss on the assistant's tokens only; the stop tokens `<|im_end|>` and `<|end_of_text|>` are trained, "
           f"and generation stops at either. Rows of {cfg.model.seq_len} tokens{', packed' if cfg.pack else ''}.")
    trained = train_and_export(ctx, cfg, "Supervised fine-tuning", how, stops)
    behaviour = _behaviour(ctx.params, ctx.inputs["sft_data"], base, ctx.out_dir, ctx.report_dir)
    _checks(ctx.params, trained.model, ctx.out_dir, trained.stats, behaviour, stops).to_parquet(
        ctx.out_dir / "checks.parquet", index=False)
    stats, result = dict(trained.stats), trained.result
    headline = {key: stats.pop(key) for key in ("val_loss", "median_tokens_per_s", "median_mfu") if key in stats}
    return {**headline, **behaviour, **stats, "steps": result["steps"], "tokens": result["tokens"],
            "resumed_from": result["resumed_from"], "world": result["world"]}


def stop_token_ids(model_dir: Path) -> list[int]:
    """The chat template's end of turn, then the end of text: a chat model's generation stops at either."""
    from components.sft.behaviour import EOT, IM_END

    vocab = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {token["content"]: token["id"] for token in vocab.get("added_tokens", [])}
    missing = [token for token in (IM_END, EOT) if token not in ids]
    if missing:
        raise ValueError(f"the tokenizer in {model_dir} has no {', '.join(missing)} token: the chat template needs it")
    return [ids[IM_END], ids[EOT]]


def _behaviour(params: Params, data_dir: Path, base: Path, tuned: Path, report_dir: Path) -> dict[str, float]:
    """Stop rates of the base and the fine-tuned model on the same held-out prompts; replies kept as samples."""
    from components.sft.behaviour import generate_replies, held_out_prompts, stop_rates, write_samples

    prompts = held_out_prompts(data_dir, params.eval_prompts)
    if not prompts:
        return {}
    before = generate_replies(base, prompts, params.max_new_tokens, temperature=params.stop_check_temperature)
    after = generate_replies(tuned, prompts, params.max_new_tokens, temperature=params.stop_check_temperature)
    write_samples(before, report_dir / "samples_base.jsonl")
    write_samples(after, report_dir / "samples_sft.jsonl")
    return stop_rates(after) | {f"base_{key}": value for key, value in stop_rates(before).items()}


def _checks(params: Params, model, out_dir: Path, stats: dict, behaviour: dict, stops: list[int]) -> pd.DataFrame:
    """What the gate requires of the chat model: one row per check, `passed` True or False."""
    rows = chat_model_checks(model, out_dir, stats, stops)
    if params.require_stop_rate_gain:
        rate, base = behaviour.get("stop_rate", math.nan), behaviour.get("base_stop_rate", math.nan)
        rows.append(("stop_rate_above_base", rate > base, rate, base,
                     f"share of {params.eval_prompts} held-out replies ending with <|im_end|> within "
                     f"{params.max_new_tokens} tokens, above the base model's"))
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def published(ctx, stage_run) -> None:
    """Registered as a version of `llm-lifecycle-sft`, tagged with the base model version it started from."""
    register_fine_tuned(ctx, stage_run, upstream_model(ctx.params, "pretrain"))
