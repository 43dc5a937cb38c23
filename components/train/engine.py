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

import copy
import json
import os
import re
import shutil
import time
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
import torch.nn.functional as F
from deepspeed.accelerator import get_accelerator

from components.model import build_model, flops_per_token
from components.tokenize import require_compatible
from components.train.data import TokenWindows, split_shards, val_batches
from components.train.evaluate import bits_per_byte, token_bytes
from components.train.mfu import mfu, peak_flops
from components.train.params import TrainConfig
from components.train.schedule import in_decay, lr_at

LATEST = "latest"  # the marker's name is DeepSpeed's own, so `load_checkpoint(dir)` finds it too


def deepspeed_config(cfg: TrainConfig, world: int) -> dict:
    """`cfg.deepspeed` (a template from infra/deepspeed/) with its "auto" values filled from `cfg`: the batch
    sizes, clipping, precision and ZeRO stage always come from the params, the rest (bucket sizes, overlap,
    offload) from the template. Recorded next to the checkpoints."""
    config = copy.deepcopy(cfg.deepspeed)
    config.update({
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world,
        "gradient_clipping": cfg.grad_clip,
        "bf16": {**config.get("bf16", {}), "enabled": cfg.bf16},
        "zero_optimization": {**config.get("zero_optimization", {}), "stage": cfg.zero_stage},
        "steps_per_print": 10**9,  # progress goes through on_metrics, not DeepSpeed's logger
    })
    config.setdefault("wall_clock_breakdown", False)
    unfilled = [key for key, value in _walk(config) if value == "auto"]
    if unfilled:
        raise ValueError(f"DeepSpeed config keys left at 'auto' that no parameter fills: {', '.join(unfilled)}; "
                         "give them values in the template")
    return config


def _walk(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


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
    lengths = token_bytes(cfg.tokenizer_dir, cfg.vocab_size) if cfg.tokenizer_dir else None
    tokens_per_step = cfg.micro_batch * cfg.grad_accum * world * cfg.model.seq_len
    flops = flops_per_token(engine.module.config, cfg.model.seq_len)["train"]
    peak = cfg.peak_flops or peak_flops(engine.device, cfg.bf16)[0]
    loss, val = None, {}
    for step in range(start, cfg.steps):  # 0-based; step-N checkpoints hold N finished steps
        began = time.perf_counter()
        lr = _set_lr(engine, cfg, step)
        windows = data["anneal" if in_decay(step, cfg.steps, cfg.warmup, cfg.decay_fraction) else "train"]
        loss = _train_step(engine, windows, step, cfg.grad_accum)
        done = step + 1
        row = {}
        if done % cfg.log_every == 0 or done == cfg.steps:
            tokens_per_s = tokens_per_step / (time.perf_counter() - began)
            row = {"loss": loss, "lr": lr, "grad_norm": _grad_norm(engine), "tokens_per_s": tokens_per_s,
                   "mfu": mfu(flops, tokens_per_s, world, peak)}
        if cfg.val_batches and (done == cfg.steps or (cfg.val_every and done % cfg.val_every == 0)):
            val = _validate(engine, cfg, lengths, rank, world)
            row |= val
        if rank == 0 and cfg.on_metrics and row:
            cfg.on_metrics({"step": done, **row})
        if done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0):
            save(engine, cfg.ckpt_dir, done, cfg.keep_last)
        if cfg.step_pause_s:
            time.sleep(cfg.step_pause_s)
    if cfg.val_batches and not val:  # resumed after the last step: nothing trained, still report validation
        val = _validate(engine, cfg, lengths, rank, world)
    return {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, **val,
            "tokens": tokens_per_step * cfg.steps, "world": world, "peak_flops": peak,
            "train_flops_per_token": flops, "ckpt_dir": str(cfg.ckpt_dir)}


def _engine(cfg: TrainConfig, world: int):
    model = build_model(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id, seed=cfg.seed)
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable()
    fused = {"fused": True} if torch.cuda.is_available() else {}  # one kernel for all tensors; CPU has none
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), **fused)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, world))
    if cfg.compile:
        engine.compile()
    return engine


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay shrinks matrices toward 0; on norm gains (1-D) it would only fight the
    normalisation, so they get none."""
    return [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]


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


def _token_losses(engine, batch: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next-token prediction in `batch`, shape (rows, seq_len)."""
    logits = engine(input_ids=batch[:, :-1]).logits
    # in float32 even under bf16: a log-softmax over the vocabulary in bf16 loses the small probabilities
    return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="none").view(
        batch.shape[0], -1)


def _loss(engine, batch: torch.Tensor) -> torch.Tensor:
    return _token_losses(engine, batch).mean()


def _train_step(engine, windows: TokenWindows, step: int, grad_accum: int) -> float:
    """One optimizer step; returns the loss averaged over micro-batches and ranks (every rank gets it)."""
    total = torch.zeros((), device=engine.device)  # collectives run on the device: NCCL has no CPU tensors
    for micro in range(grad_accum):
        loss = _loss(engine, windows.batch(step, micro).to(engine.device))
        engine.backward(loss)  # DeepSpeed divides by grad_accum itself
        engine.step()  # only steps the optimizer at the accumulation boundary
        total += loss.detach().float()
    dist.all_reduce(total)
    return total.item() / (grad_accum * dist.get_world_size())


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


@torch.no_grad()
def _validate(engine, cfg: TrainConfig, lengths, rank: int, world: int) -> dict[str, float]:
    """{val_loss} (mean nats per token) and, with the tokenizer's byte lengths, {val_bpb}, over the same
    validation windows every time."""
    shards = split_shards(cfg.token_dir, "val")
    # loss sum, tokens, loss sum over text tokens, bytes: on the device, where the collective runs
    sums = torch.zeros(4, dtype=torch.float64, device=engine.device)
    byte_table = torch.from_numpy(lengths).to(engine.device) if lengths is not None else None
    if shards:
        engine.eval()
        for batch in val_batches(shards, cfg.model.seq_len, cfg.micro_batch, cfg.val_batches, rank, world):
            batch = batch.to(engine.device)
            losses = _token_losses(engine, batch).double()
            sums[0] += losses.sum()
            sums[1] += losses.numel()
            if byte_table is not None:
                n_bytes = byte_table[batch[:, 1:]]
                sums[2] += losses[n_bytes > 0].sum()
                sums[3] += n_bytes.sum()
        engine.train()
    dist.all_reduce(sums)
    if not sums[1]:
        return {}
    result = {"val_loss": (sums[0] / sums[1]).item()}
    if sums[3]:
        result["val_bpb"] = bits_per_byte(sums[2].item(), sums[3].item())
    return result


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
