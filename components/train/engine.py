"""The pretraining loop on DeepSpeed: ZeRO 1/2/3 data parallelism, the LR schedule, exact resume.

Launched with one process per device (`torchrun ... -m components.train.run CONFIG.json`); every rank runs
`train(cfg)`. The run's whole position is the step number: the LR is a function of the step, a batch is a
function of (seed, step, micro, rank), and the model and optimizer state live in the DeepSpeed checkpoint.
So a run killed at any moment resumes from its latest complete checkpoint with the same losses it would have
had uninterrupted.

Checkpoints are `ckpt_dir/step-N/` (DeepSpeed's layout); `ckpt_dir/latest` names the newest complete one and
is replaced atomically only after every rank has finished writing, so a crash mid-save leaves the previous
checkpoint in charge.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import deepspeed
import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.accelerator import get_accelerator
from pydantic import Field

from components.model import ModelParams, build_model
from components.params import StrictModel
from components.tokenize import require_compatible
from components.train.data import TokenWindows, split_shards, val_batches
from components.train.schedule import in_decay, lr_at

LATEST = "latest"  # the marker's name is DeepSpeed's own, so `load_checkpoint(dir)` finds it too


class TrainConfig(StrictModel):
    model: ModelParams = ModelParams()
    vocab_size: int = Field(..., gt=0, description="the model's vocabulary; the token shards must match it")
    tokenizer_digest: str = Field(..., description="digest of the tokenizer the shards must have been made with")
    bos_id: int = 0
    eos_id: int = 1
    pad_id: int = 2
    token_dir: Path
    ckpt_dir: Path
    steps: int = Field(..., gt=0, description="optimizer steps in the whole run (resumes included)")
    micro_batch: int = Field(4, gt=0, description="sequences per rank per forward pass")
    grad_accum: int = Field(1, gt=0, description="forward/backward passes per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    warmup: int = Field(10, ge=0, description="linear warmup steps")
    schedule: Literal["wsd", "cosine"] = "wsd"
    decay_fraction: float = Field(0.2, ge=0, le=1, description="share of the steps the WSD decay takes; the "
                                  "anneal split (if any) is trained on during it")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay of the matrices (not norms)")
    zero_stage: Literal[1, 2, 3] = 2
    bf16: bool = False
    grad_clip: float = Field(1.0, ge=0, description="global gradient-norm clip; 0 disables")
    ckpt_every: int = Field(0, ge=0, description="save every N steps (and always at the end); 0: only the end")
    keep_last: int = Field(2, gt=0, description="checkpoints kept on disk; older ones are deleted")
    seed: int = 0
    log_every: int = Field(1, gt=0)
    val_batches: int = Field(0, ge=0, description="validation batches scored at the end (0: none)")
    step_pause_s: float = Field(0.0, ge=0, description="sleep after every step: slows a demo or test run so it "
                                "can be interrupted at a known point; no effect on the results")
    on_metrics: Callable[[dict], None] | None = Field(None, exclude=True, description="called on rank 0 every "
                                                      "log_every steps with step, loss, lr, grad_norm, tokens_per_s")


def deepspeed_config(cfg: TrainConfig, world: int) -> dict:
    """The DeepSpeed config these settings mean (plain JSON; recorded next to the checkpoints)."""
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.bf16},
        "steps_per_print": 10**9,  # progress goes through on_metrics, not DeepSpeed's logger
        "wall_clock_breakdown": False,
    }


def train(cfg: TrainConfig) -> dict:
    require_compatible(cfg.token_dir, cfg.vocab_size, cfg.tokenizer_digest)  # before anything else is spent
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())
    rank, world = dist.get_rank(), dist.get_world_size()
    engine = _engine(cfg, world)
    if rank == 0:
        cfg.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (cfg.ckpt_dir / "ds_config.json").write_text(json.dumps(deepspeed_config(cfg, world), indent=2) + "\n")
    start = _resume(engine, cfg.ckpt_dir)
    data = _data(cfg, rank, world)
    tokens_per_step = cfg.micro_batch * cfg.grad_accum * world * cfg.model.seq_len
    loss = None
    for step in range(start, cfg.steps):  # 0-based; step-N checkpoints hold N finished steps
        began = time.perf_counter()
        lr = _set_lr(engine, cfg, step)
        windows = data["anneal" if in_decay(step, cfg.steps, cfg.warmup, cfg.decay_fraction) else "train"]
        loss = _train_step(engine, windows, step, cfg.grad_accum)
        done = step + 1
        if rank == 0 and cfg.on_metrics and (done % cfg.log_every == 0 or done == cfg.steps):
            cfg.on_metrics({"step": done, "loss": loss, "lr": lr, "grad_norm": _grad_norm(engine),
                            "tokens_per_s": tokens_per_step / (time.perf_counter() - began)})
        if done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0):
            save(engine, cfg.ckpt_dir, done, cfg.keep_last)
        if cfg.step_pause_s:
            time.sleep(cfg.step_pause_s)
    val = _validate(engine, cfg, rank, world) if cfg.val_batches else None
    return {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, "val_loss": val,
            "tokens": tokens_per_step * cfg.steps, "ckpt_dir": str(cfg.ckpt_dir)}


def _engine(cfg: TrainConfig, world: int):
    model = build_model(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id, seed=cfg.seed)
    # Weight decay shrinks matrices toward 0; on norm gains (1-D) it would only fight the normalisation.
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": cfg.weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, world))
    return engine


def _data(cfg: TrainConfig, rank: int, world: int) -> dict[str, TokenWindows]:
    """The train split's windows, and the anneal split's for the decay (the train split's when there is none)."""
    def windows(split: str) -> TokenWindows:
        return TokenWindows(split_shards(cfg.token_dir, split), cfg.model.seq_len, cfg.micro_batch, cfg.seed,
                            rank, world)
    train_windows = windows("train")
    has_anneal = bool(split_shards(cfg.token_dir, "anneal"))
    return {"train": train_windows, "anneal": windows("anneal") if has_anneal else train_windows}


def _set_lr(engine, cfg: TrainConfig, step: int) -> float:
    lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.schedule, cfg.decay_fraction, cfg.min_lr_ratio)
    for group in engine.optimizer.param_groups:  # the ZeRO wrapper's groups are the wrapped optimizer's
        group["lr"] = lr
    return lr


def _loss(engine, batch: torch.Tensor) -> torch.Tensor:
    logits = engine(input_ids=batch[:, :-1]).logits
    # in float32 even under bf16: a log-softmax over the vocabulary in bf16 loses the small probabilities
    return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())


def _train_step(engine, windows: TokenWindows, step: int, grad_accum: int) -> float:
    """One optimizer step; returns the loss averaged over micro-batches and ranks (every rank gets it)."""
    total = torch.zeros(())
    for micro in range(grad_accum):
        loss = _loss(engine, windows.batch(step, micro).to(engine.device))
        engine.backward(loss)  # DeepSpeed divides by grad_accum itself
        engine.step()  # only steps the optimizer at the accumulation boundary
        total += loss.detach().float().cpu()
    dist.all_reduce(total)
    return total.item() / (grad_accum * dist.get_world_size())


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


@torch.no_grad()
def _validate(engine, cfg: TrainConfig, rank: int, world: int) -> float | None:
    shards = split_shards(cfg.token_dir, "val")
    sums = torch.zeros(2)  # loss sum, batches
    if shards:
        engine.eval()
        for batch in val_batches(shards, cfg.model.seq_len, cfg.micro_batch, cfg.val_batches, rank, world):
            sums += torch.tensor([_loss(engine, batch.to(engine.device)).float().item(), 1.0])
        engine.train()
    dist.all_reduce(sums)
    return (sums[0] / sums[1]).item() if sums[1] else None


# --- checkpoints ---

def save(engine, ckpt_dir: Path, step: int, keep_last: int) -> None:
    tag = f"step-{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step}, save_latest=False)
    dist.barrier()  # every rank's shards are on disk before the marker may name them
    if dist.get_rank() == 0:
        _write_atomic(ckpt_dir / LATEST, tag)
        for old in checkpoints(ckpt_dir)[:-keep_last]:
            shutil.rmtree(ckpt_dir / f"step-{old}", ignore_errors=True)
    dist.barrier()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old marker or the new one, never half of one


def checkpoints(ckpt_dir: Path) -> list[int]:
    """Steps of the checkpoint folders present, oldest first (complete or not: only `latest` vouches)."""
    found = (re.fullmatch(r"step-(\d+)", p.name) for p in Path(ckpt_dir).glob("step-*") if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def latest_step(ckpt_dir: Path) -> int | None:
    marker = Path(ckpt_dir) / LATEST
    if not marker.exists():
        return None
    return int(marker.read_text().strip().removeprefix("step-"))


def _resume(engine, ckpt_dir: Path) -> int:
    """Load the newest complete checkpoint; returns the steps already done (0 for a fresh run)."""
    step = latest_step(ckpt_dir)
    if step is None:
        return 0
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=f"step-{step}")
    if path is None:
        raise RuntimeError(f"{ckpt_dir / LATEST} names step-{step}, which could not be loaded")
    return int(client_state["step"])
