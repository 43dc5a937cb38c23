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
import shutil
from pathlib import Path

import pandas as pd
import torch
from pydantic import Field

from components.model import model_params, reload_difference
from components.sft.behaviour import EOT, IM_END, generate_replies, held_out_prompts, stop_rates, write_samples
from components.tokenizer import tokenizer_digest
from components.train import TrainConfig
from components.train.launch import LaunchParams, world_size
from components.train.params import METRICS, RESULT, LoopParams
from components.train.report import plot_training, read_rows, summary
from tasks import tracking
from tasks.training import forget_superseded, input_tags, launch_ranks, run_key

SECTION = "sft"
GATES = {"checks.parquet": "sft_model"}
ROOT = Path(__file__).resolve().parents[1]
__all__ = ["GATES", "Params", "SECTION", "published", "run", "train_config"]


class Params(LoopParams):
    base_model: str | None = Field(None, description="the model to fine-tune: None for the pipeline's pretrained "
                                   "model (data/pretrain), or a Hugging Face model folder or hub id")
    seq_len: int = Field(256, ge=8, description="tokens per packed row; at most the base model's context")
    epochs: float = Field(2.0, gt=0, description="passes over the training conversations (sets the steps)")
    pack: bool = Field(True, description="several conversations per row, attention kept inside each")
    launch: LaunchParams = LaunchParams()
    deepspeed_config: Path | None = Field(None, description="DeepSpeed config template; default "
                                          "infra/deepspeed/zero<zero_stage>.json")
    registered_model: str = Field("llm-lifecycle-sft", description="MLflow Model Registry name")
    eval_prompts: int = Field(32, ge=0, description="held-out prompts (SFT val split) both models answer")
    max_new_tokens: int = Field(128, gt=0, description="reply budget of the behaviour check")
    require_stop_rate_gain: bool = Field(True, description="the gate fails a model that ends its turn with "
                                         "<|im_end|> no more often than the base model did")


def run(ctx, progress: bool = True) -> dict[str, float]:
    base = base_model_dir(ctx.params.base_model, ctx.inputs["pretrain"], ctx.state_dir)
    cfg = train_config(ctx.params, ctx.inputs["sft_data"], base, ctx.state_dir)
    config_file = cfg.ckpt_dir / "train_config.json"
    config_file.write_text(cfg.model_dump_json(indent=2))
    launch_ranks(ctx.params.launch, [config_file], follow=cfg)
    result = json.loads((cfg.ckpt_dir / RESULT).read_text())
    rows = read_rows(cfg.ckpt_dir / METRICS)
    stats = summary(rows)
    plot_training(rows, ctx.report_dir / "training.png")
    from components.train import export_checkpoint  # imports DeepSpeed: only here

    stops = _stop_ids(base)
    model = export_checkpoint(cfg, ctx.out_dir, extra_card=_card(cfg, result, stats), stop_token_ids=stops)
    behaviour = _behaviour(ctx.params, ctx.inputs["sft_data"], base, ctx.out_dir, ctx.report_dir)
    shutil.copy(cfg.ckpt_dir / "ds_config.json", ctx.out_dir / "ds_config.json")
    shutil.copy(config_file, ctx.report_dir / "train_config.json")
    shutil.copy(cfg.ckpt_dir / METRICS, ctx.report_dir / METRICS)
    shutil.copy(ctx.out_dir / "README.md", ctx.report_dir / "model_card.md")
    _checks(ctx.params, model, ctx.out_dir, stats, behaviour, stops).to_parquet(ctx.out_dir / "checks.parquet",
                                                                                 index=False)
    headline = {key: stats.pop(key) for key in ("val_loss", "median_tokens_per_s", "median_mfu") if key in stats}
    return {**headline, **behaviour, **stats, "steps": result["steps"], "tokens": result["tokens"],
            "resumed_from": result["resumed_from"], "world": result["world"]}


def base_model_dir(name: str | None, pipeline_model: Path, state_dir: Path) -> Path:
    """The folder of the model to fine-tune: the pipeline's own, a local folder, or a hub id downloaded once."""
    if name is None:
        return pipeline_model
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, cache_dir=state_dir / "hub"))
    except Exception as err:  # offline, unknown repo, gated model: the hub says which
        raise ValueError(f"sft.base_model {name!r} is neither a model folder nor a hub id that could be "
                         f"downloaded ({err}); name a local Hugging Face folder") from err


def train_config(params: Params, data_dir: Path, base: Path, state_dir: Path) -> TrainConfig:
    """The run's full config, steps from the epochs; its checkpoint folder is named by everything that decides
    the weights (the base model's files included)."""
    from transformers import AutoConfig

    from components.train.objectives.sft import Objective

    config = AutoConfig.from_pretrained(base)
    if params.seq_len > config.max_position_embeddings:
        raise ValueError(f"sft.seq_len {params.seq_len} is longer than the base model's context "
                         f"({config.max_position_embeddings} positions in {base})")
    template = params.deepspeed_config or ROOT / "infra" / "deepspeed" / f"zero{params.zero_stage}.json"
    cfg = TrainConfig(**params.model_dump(include=set(LoopParams.model_fields)), objective="sft", init_from=base,
                      pack=params.pack, model=model_params(config, params.seq_len), steps=1,
                      vocab_size=config.vocab_size, tokenizer_digest=tokenizer_digest(base), token_dir=data_dir,
                      ckpt_dir=state_dir, bos_id=config.bos_token_id, eos_id=config.eos_token_id,
                      pad_id=config.pad_token_id, deepspeed=json.loads(Path(template).read_text()))
    world = world_size(params.launch)
    rows = len(Objective(cfg).rows("train"))  # also refuses examples tokenized for another model
    steps = max(1, math.ceil(params.epochs * rows / (params.micro_batch * params.grad_accum * world)))
    cfg = cfg.model_copy(update={"steps": steps})
    ckpt_dir = state_dir / run_key(cfg, data_dir, world)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return cfg.model_copy(update={"ckpt_dir": ckpt_dir})


def _stop_ids(model_dir: Path) -> list[int]:
    """The chat template's end of turn, then the end of text: a chat model's generation stops at either."""
    vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {token["content"]: token["id"] for token in vocab.get("added_tokens", [])}
    missing = [token for token in (IM_END, EOT) if token not in ids]
    if missing:
        raise ValueError(f"the tokenizer in {model_dir} has no {', '.join(missing)} token: the chat template needs it")
    return [ids[IM_END], ids[EOT]]


def _behaviour(params: Params, data_dir: Path, base: Path, tuned: Path, report_dir: Path) -> dict[str, float]:
    """Stop rates of the base and the fine-tuned model on the same held-out prompts; replies kept as samples."""
    prompts = held_out_prompts(data_dir, params.eval_prompts)
    if not prompts:
        return {}
    before = generate_replies(base, prompts, params.max_new_tokens)
    after = generate_replies(tuned, prompts, params.max_new_tokens)
    write_samples(before, report_dir / "samples_base.jsonl")
    write_samples(after, report_dir / "samples_sft.jsonl")
    return stop_rates(after) | {f"base_{key}": value for key, value in stop_rates(before).items()}


def _checks(params: Params, model, out_dir: Path, stats: dict, behaviour: dict, stops: list[int]) -> pd.DataFrame:
    """What the gate requires of the chat model: one row per check, `passed` True or False."""
    probe = torch.arange(min(64, model.config.max_position_embeddings)).remainder(model.config.vocab_size)[None]
    difference = reload_difference(model, out_dir, probe)
    saved_stops = json.loads((out_dir / "generation_config.json").read_text()).get("eos_token_id")
    rows = [("hf_reload_same_logits", difference < 1e-4, difference, 1e-4,
             "AutoModelForCausalLM.from_pretrained(output) gives the trained model's logits"),
            ("losses_finite", stats["all_losses_finite"] == 1.0, stats["all_losses_finite"], 1.0,
             "no NaN or inf training loss"),
            ("generation_stops_at_both", saved_stops == stops, float(saved_stops == stops), 1.0,
             f"generation_config.json eos_token_id is [<|im_end|>, <|end_of_text|>] = {stops}")]
    if params.require_stop_rate_gain:
        rate, base = behaviour.get("stop_rate", math.nan), behaviour.get("base_stop_rate", math.nan)
        rows.append(("stop_rate_above_base", rate > base, rate, base,
                     f"share of {params.eval_prompts} held-out replies ending with <|im_end|> within "
                     f"{params.max_new_tokens} tokens, above the base model's"))
    return pd.DataFrame(rows, columns=["check", "passed", "value", "limit", "detail"])


def _card(cfg: TrainConfig, result: dict, stats: dict) -> str:
    lines = ["## Supervised fine-tuning", "",
             f"Fine-tuned from `{cfg.init_from}`: {result['steps']} steps, {result['tokens']:,} tokens, "
             f"{result['world']} rank(s), ZeRO-{cfg.zero_stage}, {'bf16' if cfg.bf16 else 'fp32'}, peak LR {cfg.lr:g}, "
             f"rows of {cfg.model.seq_len} tokens{' (packed)' if cfg.pack else ''}. Loss on the assistant's tokens "
             "only; the stop tokens `<|im_end|>` and `<|end_of_text|>` are trained, and generation stops at either.",
             "", "| | |", "|---|---|"]
    lines += [f"| {key} | {stats[key]:.4g} |" for key in ("final_train_loss", "val_loss", "median_tokens_per_s")
              if key in stats]
    return "\n".join(lines)


def published(ctx, stage_run) -> None:
    """Once the chat model passed its gate and is published: drop superseded checkpoints, and register it,
    tagged with the base model version and the data it was made from."""
    from tasks.dag import Workspace

    ws = Workspace()
    cfg = json.loads((ctx.report_dir / "train_config.json").read_text())
    forget_superseded(ctx.state_dir / Path(cfg["ckpt_dir"]).name)
    if not stage_run.run_id:  # not tracked: nothing to register in
        return
    tags = {"llm.tokenizer_digest": cfg["tokenizer_digest"], "llm.base_model": _base_version(ws, ctx.params),
            "llm.git_commit": tracking.git_commit(ws.root), "llm.stage_run_id": stage_run.run_id or "",
            **{f"llm.{k}": v for k, v in input_tags(ws, ctx.spec).items()}}
    version = stage_run.register_model(ctx.out_dir, ctx.params.registered_model, tags,
                                       description=f"chat model fine-tuned from {tags['llm.base_model']}")
    if version:
        print(f"registered {ctx.params.registered_model} version {version}", flush=True)


def _base_version(ws, params: Params) -> str:
    """`NAME/VERSION` of the registered base model this run fine-tuned (the one whose stage published the
    data/pretrain that dvc.lock records), or the folder or hub id the params named."""
    if params.base_model is not None:
        return params.base_model
    from tasks.lineage import producer
    from tasks.training import dvc_md5

    md5 = dvc_md5(ws, "pretrain", "data/pretrain")
    run_id = producer("data/pretrain", md5)
    version = tracking.client().get_run(run_id).data.tags.get(f"{tracking.TAG}registered_model") if run_id else None
    return version or f"data/pretrain@{md5}"
