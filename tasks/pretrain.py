"""Pretraining: a Llama-style model trained with DeepSpeed on the token shards, exported in Hugging Face
format, checked, and registered in the MLflow Model Registry with its lineage.

The ranks run in their own processes (`launch.command`: torchrun, the deepspeed launcher over a hostfile, or
srun); this stage writes their config, follows their metrics into MLflow while they train, and then turns
the newest checkpoint into the stage's output. Checkpoints live in `.llm-lifecycle/pretrain/<run key>/`: a
rerun of the same training (same params, data, tokenizer and training code) resumes where the last attempt
stopped, and a finished one is only exported again.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
from pydantic import Field, model_validator

from components.storage import file_md5
from components.tokenize import read_manifest, require_compatible
from components.tokenizer import tokenizer_digest
from components.train import TrainConfig, TrainParams, decay_start
from components.train.launch import LaunchParams, world_size
from components.train.report import plot_training, read_rows, summary
from components.train.params import METRICS, RESULT
from tasks import tracking
from tasks.training import forget_superseded, input_tags, launch_ranks, run_key

SECTION = "pretrain"
GATES = {"checks.parquet": "pretrained_model"}
ROOT = Path(__file__).resolve().parents[1]
__all__ = ["GATES", "Params", "SECTION", "published", "run", "run_key", "train_config"]


class Params(TrainParams):
    launch: LaunchParams = LaunchParams()
    deepspeed_config: Path | None = Field(None, description="DeepSpeed config template; default "
                                          "infra/deepspeed/zero<zero_stage>.json")
    registered_model: str = Field("llm-lifecycle-base", description="MLflow Model Registry name")
    require_beats_unigram: bool = Field(True, description="the gate fails a model whose validation bits per "
                                        "byte are not below the unigram baseline's: it learned nothing usable")
    scaling_run: str | None = Field(None, description="the MLflow run of the scaling sweep that chose this size "
                                    "(set by `llm-lifecycle scaling` in params.scaling.yaml; lineage only)")

    @model_validator(mode="after")
    def _validation_to_judge_by(self) -> Params:
        if self.val_batches == 0:
            raise ValueError("val_batches is 0: the stage needs validation batches to report bits per byte and "
                             "to compare them with the unigram baseline; set pretrain.val_batches (e.g. 16)")
        return self


def run(ctx, progress: bool = True) -> dict[str, float]:
    from components.model import parameter_count
    from components.train.evaluate import token_bytes, unigram_bits_per_byte

    cfg = train_config(ctx.params, ctx.inputs["tokenize"], ctx.inputs["tokenizer"], ctx.state_dir)
    config_file = cfg.ckpt_dir / "train_config.json"
    config_file.write_text(cfg.model_dump_json(indent=2))
    launch_ranks(ctx.params.launch, [config_file], follow=cfg)
    result = json.loads((cfg.ckpt_dir / RESULT).read_text())
    rows = read_rows(cfg.ckpt_dir / METRICS)
    baseline = unigram_bits_per_byte(cfg.token_dir, token_bytes(cfg.tokenizer_dir, cfg.vocab_size),
                                     cfg.model.seq_len, cfg.micro_batch, cfg.val_batches, result["world"])
    stats = summary(rows) | baseline
    plot_training(rows, ctx.report_dir / "training.png", baseline["unigram_bpb"],
                  decay_from=decay_start(cfg.steps, cfg.warmup, cfg.decay_fraction))
    from components.train import export_checkpoint  # imports DeepSpeed: only here

    model = export_checkpoint(cfg, ctx.out_dir, extra_card=_card(cfg, result, stats))
    shutil.copy(cfg.ckpt_dir / "ds_config.json", ctx.out_dir / "ds_config.json")
    shutil.copy(config_file, ctx.report_dir / "train_config.json")
    shutil.copy(cfg.ckpt_dir / METRICS, ctx.report_dir / METRICS)
    shutil.copy(ctx.out_dir / "README.md", ctx.report_dir / "model_card.md")  # linked from the run summary
    _checks(ctx.params, cfg, model, ctx.out_dir, stats).to_parquet(ctx.out_dir / "checks.parquet", index=False)
    params = parameter_count(model.config)
    headline = {key: stats.pop(key) for key in ("val_bpb", "unigram_bpb", "val_loss", "median_mfu",
                                                "median_tokens_per_s") if key in stats}  # the summary's columns
    return {**headline, "parameters": params["total"], **stats, "non_embedding_parameters": params["non_embedding"],
            "tokens": result["tokens"], "steps": result["steps"], "resumed_from": result["resumed_from"],
            "world": result["world"], "peak_flops": result["peak_flops"]}


def train_config(params: Params, token_dir: Path, tokenizer_dir: Path, state_dir: Path) -> TrainConfig:
    """The run's full config; its checkpoint folder is named by everything that decides the weights."""
    manifest = read_manifest(token_dir)
    digest = tokenizer_digest(tokenizer_dir)  # of the folder itself, not what a manifest claims
    require_compatible(token_dir, manifest["vocab_size"], digest)
    special = json.loads((tokenizer_dir / "manifest.json").read_text())["special_token_ids"]
    template = params.deepspeed_config or ROOT / "infra" / "deepspeed" / f"zero{params.zero_stage}.json"
    hyper = params.model_dump(include=set(TrainParams.model_fields))
    cfg = TrainConfig(**hyper, vocab_size=manifest["vocab_size"], tokenizer_digest=digest,
                      tokenizer_dir=tokenizer_dir, token_dir=token_dir, ckpt_dir=state_dir,
                      bos_id=special["<|begin_of_text|>"], eos_id=special["<|end_of_text|>"],
                      pad_id=special["<|pad|>"], deepspeed=json.loads(Path(template).read_text()))
    ckpt_dir = state_dir / run_key(cfg, token_dir, world_size(params.launch))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return cfg.model_copy(update={"ckpt_dir": ckpt_dir})


def _checks(params: Params, cfg: TrainConfig, model, out_dir: Path, stats: dict) -> pd.DataFrame:
    """What the gate requires of the model: one row per check, `passed` True or False."""
    from components.model import reload_difference
    from components.train import split_shards, val_batches

    batch = next(val_batches(split_shards(cfg.token_dir, "val") or split_shards(cfg.token_dir, "train"),
                             min(cfg.model.seq_len, 64), 2, 1))
    difference = reload_difference(model, out_dir, batch[:, :-1])
    rows = [("hf_reload_same_logits", difference < 1e-4, difference, 1e-4,
             "AutoModelForCausalLM.from_pretrained(output) gives the trained model's logits"),
            ("losses_finite", stats["all_losses_finite"] == 1.0, stats["all_losses_finite"], 1.0,
             "no NaN or inf training loss")]
    if params.require_beats_unigram:
        bpb = stats.get("val_bpb", math.nan)
        rows.append(("val_bpb_below_unigram", bpb < stats["unigram_bpb"], bpb, stats["unigram_bpb"],
                     "validation bits per byte below the unigram baseline's on the same windows "
                     "(needs val_batches > 0)"))
    return pd.DataFrame(rows, columns=["check", "passed", "value", "limit", "detail"])


def _card(cfg: TrainConfig, result: dict, stats: dict) -> str:
    from components.model import llama_config, parameter_count

    config = llama_config(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id)
    lines = ["## Training", "",
             f"{result['steps']} steps, {result['tokens']:,} tokens, {result['world']} rank(s), ZeRO-{cfg.zero_stage}, "
             f"{'bf16' if cfg.bf16 else 'fp32'}, {cfg.schedule} schedule (peak LR {cfg.lr:g}), seed {cfg.seed}.",
             "", "| | |", "|---|---|"]
    for key in ("final_train_loss", "val_loss", "val_bpb", "unigram_bpb", "median_tokens_per_s", "median_mfu"):
        if key in stats:
            lines.append(f"| {key} | {stats[key]:.4g} |")
    lines += ["", "## Data", "", f"- token shards manifest md5 `{file_md5(cfg.token_dir / 'manifest.json')}`",
              f"- tokenizer digest `{cfg.tokenizer_digest}`",
              f"- {parameter_count(config)['total']:,} parameters; DeepSpeed config in `ds_config.json`"]
    return "\n".join(lines)


def published(ctx, stage_run) -> None:
    """Once the model passed its gate and is published: drop superseded checkpoints, and register the model
    in the MLflow Model Registry, tagged with what it was made from."""
    from components.model import describe

    from tasks.dag import Workspace

    ws = Workspace()
    cfg = json.loads((ctx.report_dir / "train_config.json").read_text())
    inputs = input_tags(ws, ctx.spec)
    tags = {"llm.tokenizer_digest": cfg["tokenizer_digest"],
            "llm.token_manifest_md5": file_md5(ctx.inputs["tokenize"] / "manifest.json"),
            "llm.git_commit": tracking.git_commit(ws.root), "llm.stage_run_id": stage_run.run_id or "",
            "llm.scaling_run": ctx.params.scaling_run or "",
            "llm.deepspeed_config": (ctx.out_dir / "ds_config.json").read_text()[:5000],
            **{f"llm.{k}": v for k, v in inputs.items()}}
    forget_superseded(ctx.state_dir / Path(cfg["ckpt_dir"]).name)
    version = stage_run.register_model(ctx.out_dir, ctx.params.registered_model, tags,
                                       description=describe(TrainConfig(**cfg).model, cfg["vocab_size"]))
    if version:
        print(f"registered {ctx.params.registered_model} version {version}", flush=True)
