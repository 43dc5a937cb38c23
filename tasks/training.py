"""What every training stage shares (pretrain, sft and the post-training stages after them): the run key that
names a run's checkpoint folder, the launch of the ranks with their metrics followed into MLflow, the
lineage tags of a registered model, and the clean-up of superseded checkpoints; and for the fine-tuning
stages (a model folder in, a model folder out) their params, config, training, export and registration.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from components.storage import code_digest, file_md5
from components.train import TrainConfig
from components.train.launch import LaunchParams, command, die_with_parent, world_size
from components.train.params import METRICS, RESULT, LoopParams
from components.train.report import plot_training, read_rows, summary
from tasks import tracking

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("components/train", "components/model")  # what the run key hashes, besides params and data


# Settings that change what is logged or kept, not the weights: a run may resume under different values.
OBSERVATION_FIELDS = {"ckpt_dir", "token_dir", "tokenizer_dir", "on_metrics", "step_pause_s", "log_every",
                      "val_every", "val_batches", "ckpt_every", "keep_last", "peak_flops", "step_timeout_s"}


def run_key(cfg: TrainConfig, token_dir: Path, world: int) -> str:
    """Names the checkpoint folder: equal exactly when a run may resume another's checkpoints. The global
    batch is part of it (it decides what each step trains on), but not how it is split into ranks and
    accumulation steps: the engine resumes a checkpoint on another number of ranks (a lost node), converting
    it through DeepSpeed's universal format."""
    global_batch = cfg.micro_batch * cfg.grad_accum * world
    settings = cfg.model_dump_json(exclude=OBSERVATION_FIELDS | {"micro_batch", "grad_accum"})
    sha = hashlib.sha256(settings.encode() + f"global_batch={global_batch}".encode())
    sha.update(file_md5(token_dir / "manifest.json").encode())  # the manifest lists every shard's md5
    sha.update(code_digest(ROOT, TRAINING_CODE).encode())
    if cfg.init_from:  # fine-tuning: the starting weights decide the result as much as the data
        sha.update(folder_digest(Path(cfg.init_from)).encode())
    return f"run-{sha.hexdigest()[:16]}"


def launch_ranks(launch: LaunchParams, config_files: list[Path], follow: TrainConfig | None = None) -> None:
    """Start the ranks on the configs (trained in turn) and wait. Their output goes to this process's log;
    with `follow`, that run's metrics go to MLflow as they come."""
    cmd = command(launch, "components.train.run", *map(str, config_files))
    print(f"launching {world_size(launch)} rank(s): {' '.join(cmd)}", flush=True)
    follower = _MetricsFollower(follow.ckpt_dir / METRICS, follow.steps) if follow else None
    if follower:
        follower.start()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, preexec_fn=die_with_parent, stdout=sys.stdout, stderr=sys.stderr)
    finally:
        if follower:
            follower.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with {proc.returncode} (its output is above); a rerun resumes from "
                           "the newest checkpoint of each run")


MLFLOW_WAIT_S = 120  # after training, how long buffered metrics wait for a tracking server that is away


class _MetricsFollower(threading.Thread):
    """Tails rank 0's metrics.jsonl: every new row to MLflow (with its step) and one progress line to the log."""

    def __init__(self, path: Path, steps: int):
        super().__init__(daemon=True)
        self.path, self.steps, self.offset = path, steps, path.stat().st_size if path.exists() else 0
        self.stage_run, self.done = tracking.current_stage_run(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(2.0):
            self.follow()
        self.follow()

    def stop(self) -> None:
        self.done.set()
        self.join()
        gap = self.stage_run.flush_metrics(wait_s=MLFLOW_WAIT_S)
        if gap:  # the stage goes on: the rows are kept in metrics.jsonl all the same
            steps = sorted({metric.step for metric in gap})
            print(f"MLflow stayed unreachable for {MLFLOW_WAIT_S:.0f} s after training: {len(gap)} metric values of "
                  f"steps {steps[0]}-{steps[-1]} did not reach it (they are in {self.path})", flush=True)

    def follow(self) -> None:
        if not self.path.exists():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
        complete = [line for line in lines if line.endswith("\n")]  # a line being written waits for next time
        self.offset += sum(len(line.encode()) for line in complete)
        for row in map(json.loads, complete):
            step = row.pop("step")
            self.stage_run.buffer_metrics(row, step=step)
            shown = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
            print(f"step {step}/{self.steps}  {shown}", flush=True)


def forget_superseded(ckpt_dir: Path) -> None:
    """Delete checkpoints of earlier configurations: the published model supersedes them, and at scale each
    set is terabytes. The current run's stay, so it can be continued."""
    for other in ckpt_dir.parent.glob("run-*"):
        if other != ckpt_dir and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def dvc_md5(ws, upstream: str, path: str) -> str:
    """The md5 dvc.lock records for `path` as `upstream`'s output: the version of the data that was read."""
    outs = ws.lock_entry(upstream).get("outs", [])
    return next((out.get("md5", "") for out in outs if out["path"] == path), "")


def folder_digest(folder: Path) -> str:
    """md5 over a model folder's files (names and contents): equal exactly when the weights, config and
    tokenizer are."""
    digest = hashlib.md5()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_md5(path)}\0".encode())
    return digest.hexdigest()


def input_tags(ws, spec) -> dict[str, str]:
    """`llm.input.<path>`: the DVC md5 of each input the stage read, as tags for a registered model version."""
    return {f"input.{path}": dvc_md5(ws, up, path) for up, path in spec.inputs().items()}


# --- fine-tuning stages (sft, reward, dpo): a model folder in, a model folder out ---

class FineTuneParams(LoopParams):
    """What every fine-tuning stage is set with; each stage adds its own fields and defaults."""

    base_model: str | None = Field(None, description="the model to start from: None for the pipeline's own "
                                   "upstream model, or a Hugging Face model folder or hub id")
    seq_len: int = Field(256, ge=8, description="tokens per row; at most the base model's context")
    epochs: float = Field(2.0, gt=0, description="passes over the training rows (sets the steps)")
    launch: LaunchParams = LaunchParams()
    deepspeed_config: Path | None = Field(None, description="DeepSpeed config template; default "
                                          "infra/deepspeed/zero<zero_stage>.json")
    registered_model: str = Field(..., description="MLflow Model Registry name")


def base_model_dir(name: str | None, pipeline_model: Path, state_dir: Path) -> Path:
    """The folder of the model to start from: the pipeline's own, a local folder, or a hub id downloaded once."""
    if name is None:
        return pipeline_model
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, cache_dir=state_dir / "hub"))
    except Exception as err:  # offline, unknown repo, gated model: the hub's message says which
        raise ValueError(f"base_model {name!r} is neither a model folder nor a hub id that could be downloaded "
                         f"({err}); name a local Hugging Face folder") from err


def fine_tune_config(params: FineTuneParams, objective: str, data_dir: Path, base: Path, state_dir: Path,
                     steps: int | None = None, **settings) -> TrainConfig:
    """The run's full config, its steps from the epochs unless given; its checkpoint folder is named by everything
    that decides the weights (the base model's files included). Building the objective checks the data."""
    from transformers import AutoConfig

    from components.model import model_params
    from components.tokenizer import tokenizer_digest
    from components.train.objectives import objective_for

    config = AutoConfig.from_pretrained(base)
    if params.seq_len > config.max_position_embeddings:
        raise ValueError(f"seq_len {params.seq_len} is longer than the base model's context "
                         f"({config.max_position_embeddings} positions in {base})")
    template = params.deepspeed_config or ROOT / "infra" / "deepspeed" / f"zero{params.zero_stage}.json"
    cfg = TrainConfig(**params.model_dump(include=set(LoopParams.model_fields)), objective=objective, init_from=base,
                      model=model_params(config, params.seq_len), steps=1, vocab_size=config.vocab_size,
                      tokenizer_digest=tokenizer_digest(base), token_dir=data_dir, ckpt_dir=state_dir,
                      bos_id=config.bos_token_id, eos_id=config.eos_token_id, pad_id=config.pad_token_id,
                      deepspeed=json.loads(Path(template).read_text()), **settings)
    world = world_size(params.launch)
    if steps is None:
        rows = objective_for(cfg).train_size()
        steps = max(1, math.ceil(params.epochs * rows / (params.micro_batch * params.grad_accum * world)))
    cfg = cfg.model_copy(update={"steps": steps})
    objective_for(cfg)  # checks the data, and the objective's own rules on the run (e.g. PPO's rollout steps)
    ckpt_dir = state_dir / run_key(cfg, data_dir, world)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    return cfg.model_copy(update={"ckpt_dir": ckpt_dir})


@dataclass(frozen=True)
class Trained:
    cfg: TrainConfig
    result: dict  # the ranks' result.json
    stats: dict  # summary of the logged rows: final losses, median throughput and MFU
    model: object  # the exported model, in memory, for checks against the folder


def train_and_export(ctx, cfg: TrainConfig, title: str, how: str, stop_token_ids: list[int] | None = None) -> Trained:
    """Launch the ranks on `cfg`, then export the newest checkpoint into the stage's output with a card that
    says `how` it was trained (under `title`); the config, metrics, loss plot and card go to the reports."""
    config_file = cfg.ckpt_dir / "train_config.json"
    config_file.write_text(cfg.model_dump_json(indent=2))
    launch_ranks(ctx.params.launch, [config_file], follow=cfg)
    result = json.loads((cfg.ckpt_dir / RESULT).read_text())
    rows = read_rows(cfg.ckpt_dir / METRICS)
    stats = summary(rows)
    plot_training(rows, ctx.report_dir / "training.png")
    from components.train import export_checkpoint  # imports DeepSpeed: only here

    card = _training_card(title, cfg, result, stats, how)
    model = export_checkpoint(cfg, ctx.out_dir, extra_card=card, stop_token_ids=stop_token_ids)
    shutil.copy(cfg.ckpt_dir / "ds_config.json", ctx.out_dir / "ds_config.json")
    shutil.copy(config_file, ctx.report_dir / "train_config.json")
    shutil.copy(cfg.ckpt_dir / METRICS, ctx.report_dir / METRICS)
    shutil.copy(ctx.out_dir / "README.md", ctx.report_dir / "model_card.md")  # linked from the run summary
    return Trained(cfg, result, stats, model)


def _training_card(title: str, cfg: TrainConfig, result: dict, stats: dict, how: str) -> str:
    """The model card's section on how a fine-tuned model was trained."""
    lines = [f"## {title}", "",
             f"Fine-tuned from `{cfg.init_from}`: {result['steps']} steps, {result['tokens']:,} tokens, "
             f"{result['world']} rank(s), ZeRO-{cfg.zero_stage}, {'bf16' if cfg.bf16 else 'fp32'}, peak LR {cfg.lr:g}. "
             f"{how}", "", "| | |", "|---|---|"]
    return "\n".join(lines + [f"| {key} | {value:.4g} |" for key, value in stats.items() if isinstance(value, float)])


def register_fine_tuned(ctx, stage_run, base: str, extra_tags: dict[str, str] | None = None) -> None:
    """After the gate: drop superseded checkpoints and register the output as a new version of the stage's
    registered model, tagged with the model it started from, the data it read (DVC md5s) and the code."""
    from tasks.dag import Workspace

    ws = Workspace()
    cfg = json.loads((ctx.report_dir / "train_config.json").read_text())
    forget_superseded(ctx.state_dir / Path(cfg["ckpt_dir"]).name)
    if not stage_run.run_id:  # not tracked: nothing to register in
        return
    tags = {"llm.tokenizer_digest": cfg["tokenizer_digest"], "llm.base_model": base,
            "llm.git_commit": tracking.git_commit(ws.root), "llm.stage_run_id": stage_run.run_id,
            **{f"llm.{k}": v for k, v in input_tags(ws, ctx.spec).items()}, **(extra_tags or {})}
    name = ctx.params.registered_model
    version = stage_run.register_model(ctx.out_dir, name, tags, description=f"{ctx.spec.name} model from {base}")
    if version:
        print(f"registered {name} version {version}", flush=True)


def upstream_model(params: FineTuneParams, upstream: str) -> str:
    """`NAME/VERSION` of the registered model that stage `upstream` published as the data/<upstream> that
    dvc.lock records (what this stage started from), or the folder or hub id the params named."""
    if params.base_model is not None:
        return params.base_model
    from tasks.dag import Workspace
    from tasks.lineage import producer

    path = f"data/{upstream}"
    md5 = dvc_md5(Workspace(), upstream, path)
    run_id = producer(path, md5)
    version = tracking.client().get_run(run_id).data.tags.get(f"{tracking.TAG}registered_model") if run_id else None
    return version or f"{path}@{md5}"


CHECK_COLUMNS = ["check", "passed", "value", "limit", "detail"]  # a model gate's table: one row per check


def chat_model_checks(model, out_dir: Path, stats: dict, stops: list[int]) -> list[tuple]:
    """The checks every exported chat model must pass: the folder reloads in transformers with the trained
    logits, the losses stayed finite, and generation stops at the template's end of turn and at end of text."""
    import torch

    from components.model import reload_difference

    probe = torch.arange(min(64, model.config.max_position_embeddings)).remainder(model.config.vocab_size)[None]
    difference = reload_difference(model, out_dir, probe)
    saved_stops = json.loads((out_dir / "generation_config.json").read_text()).get("eos_token_id")
    return [("hf_reload_same_logits", difference < 1e-4, difference, 1e-4,
             "AutoModelForCausalLM.from_pretrained(output) gives the trained model's logits"),
            ("losses_finite", stats["all_losses_finite"] == 1.0, stats["all_losses_finite"], 1.0,
             "no NaN or inf training loss"),
            ("generation_stops_at_both", saved_stops == stops, float(saved_stops == stops), 1.0,
             f"generation_config.json eos_token_id is [<|im_end|>, <|end_of_text|>] = {stops}")]
