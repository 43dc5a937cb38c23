"""The training loop on DeepSpeed: ZeRO 0-3 data parallelism, the LR schedule, exact resume — for any objective.

What is learned (pretraining's next-token loss, SFT's masked loss, ...) comes from the objective that
`cfg.objective` names (components/train/objectives): its model, batches, loss and validation. Everything
else is here and the same for all of them.

Launched with one process per device (`torchrun ... -m components.train.run CONFIG.json`); every rank runs
`train(cfg)`. The run's whole position is the step number: the LR is a function of the step, a batch is a
function of (seed, step, micro, rank) in every objective, and the model and optimizer state live in the DeepSpeed checkpoint.
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
from deepspeed.accelerator import get_accelerator

from components.model import flops_per_token
from components.train.mfu import mfu, peak_flops
from components.train.objectives import objective_for
from components.train.params import TrainConfig
from components.train.schedule import lr_at

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
    objective = objective_for(cfg)  # checks the data against the tokenizer before anything else is spent
    deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name())
    rank, world = dist.get_rank(), dist.get_world_size()
    engine = _engine(cfg, world, objective.build_model())
    if rank == 0:
        cfg.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (cfg.ckpt_dir / "ds_config.json").write_text(json.dumps(deepspeed_config(cfg, world), indent=2) + "\n")
    if hasattr(objective, "attach"):  # an objective whose batches come from the model being trained (PPO)
        objective.attach(engine, lambda value: _mean_over_ranks(value, engine.device))
    start, tokens, state = _resume(engine, cfg.ckpt_dir)
    if state is not None:
        objective.load_state_dict(state)
    batches = objective.train_batches(rank, world)
    flops = flops_per_token(engine.module.config, cfg.model.seq_len)["train"]
    peak = cfg.peak_flops or peak_flops(engine.device, cfg.bf16)[0]
    loss, val = None, {}
    for step in range(start, cfg.steps):  # 0-based; step-N checkpoints hold N finished steps
        began = time.perf_counter()
        lr = _set_lr(engine, cfg, step)
        stats = _train_step(engine, objective, batches, step, cfg.grad_accum)
        loss, done = stats.pop("loss"), step + 1
        step_tokens = int(stats.pop("tokens"))
        tokens += step_tokens
        row = {}
        if done % cfg.log_every == 0 or done == cfg.steps:
            tokens_per_s = step_tokens / (time.perf_counter() - began)
            row = {"loss": loss, "lr": lr, "grad_norm": _grad_norm(engine), "tokens_per_s": tokens_per_s,
                   "mfu": mfu(flops, tokens_per_s, world, peak), **stats}
        if cfg.val_batches and (done == cfg.steps or (cfg.val_every and done % cfg.val_every == 0)):
            val = _validate(engine, objective, rank, world)
            row |= val
        if rank == 0 and cfg.on_metrics and row:
            cfg.on_metrics({"step": done, **row})
        if done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0):
            save(engine, cfg.ckpt_dir, done, cfg.keep_last, tokens, _objective_state(objective))
        if cfg.step_pause_s:
            time.sleep(cfg.step_pause_s)
    if cfg.val_batches and not val:  # resumed after the last step: nothing trained, still report validation
        val = _validate(engine, objective, rank, world)
    return {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, **val, "tokens": tokens,
            "world": world, "peak_flops": peak, "train_flops_per_token": flops, "ckpt_dir": str(cfg.ckpt_dir)}


def _engine(cfg: TrainConfig, world: int, model):
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


def _set_lr(engine, cfg: TrainConfig, step: int) -> float:
    lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.schedule, cfg.decay_fraction, cfg.min_lr_ratio)
    for group in engine.optimizer.param_groups:  # the ZeRO wrapper's groups are the wrapped optimizer's
        group["lr"] = lr
    return lr


def _to(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def _train_step(engine, objective, batches, step: int, grad_accum: int) -> dict[str, float]:
    """One optimizer step. Returns the loss and the objective's metrics averaged over micro-batches and ranks,
    and the tokens trained on by all ranks (every rank gets the same numbers)."""
    sums, tokens = None, 0
    for micro in range(grad_accum):
        batch = batches(step, micro)
        loss, metrics = objective.loss(engine, _to(batch, engine.device))
        engine.backward(loss)  # DeepSpeed divides by grad_accum itself
        engine.step()  # only steps the optimizer at the accumulation boundary
        values = {"loss": loss.detach(), **metrics}
        if sums is None:  # on the device, where the collective runs: NCCL has no CPU tensors
            sums = {key: torch.zeros((), dtype=torch.float64, device=engine.device) for key in values}
        for key, value in values.items():
            sums[key] += value.double()
        tokens += objective.tokens(batch)
    names = list(sums)
    reduced = torch.stack([sums[key] for key in names] + [torch.tensor(float(tokens), dtype=torch.float64,
                                                                       device=engine.device)])
    dist.all_reduce(reduced)
    stats = {key: value / (grad_accum * dist.get_world_size()) for key, value in zip(names, reduced.tolist())}
    return stats | {"tokens": reduced[-1].item()}


def _mean_over_ranks(value: float, device) -> float:
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def _objective_state(objective) -> dict | None:
    """What an objective carries from step to step besides the weights (e.g. PPO's adaptive KL coefficient)."""
    return objective.state_dict() if hasattr(objective, "state_dict") else None


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


@torch.no_grad()
def _validate(engine, objective, rank: int, world: int) -> dict[str, float]:
    """The objective's validation metrics over its validation batches, summed over every rank's share."""
    engine.eval()
    sums: dict[str, torch.Tensor] = {}
    for batch in objective.val_batches(rank, world):
        for key, value in objective.val_sums(engine, _to(batch, engine.device)).items():
            sums[key] = sums.get(key, 0) + value.double()
    engine.train()
    names = sorted(sums)  # every rank scores as many batches, so every rank has the same names
    reduced = torch.stack([sums[key] for key in names]) if names else torch.zeros(1, dtype=torch.float64,
                                                                                   device=engine.device)
    dist.all_reduce(reduced)
    return objective.val_metrics(dict(zip(names, reduced.tolist())))


# --- checkpoints ---

def save(engine, ckpt_dir: Path, step: int, keep_last: int, tokens: int = 0, objective_state: dict | None = None) -> None:
    tag = f"step-{step}"
    client_state = {"step": step, "tokens": tokens, "objective": objective_state}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
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


def _resume(engine, ckpt_dir: Path) -> tuple[int, int, dict | None]:
    """Load the newest complete checkpoint; returns the steps already done, the tokens they trained on and the
    objective's saved state ((0, 0, None) for a fresh run)."""
    step = latest_step(ckpt_dir)
    if step is None:
        return 0, 0, None
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=f"step-{step}")
    if path is None:
        raise RuntimeError(f"{ckpt_dir / LATEST} names step-{step}, which could not be loaded")
    return int(client_state["step"]), int(client_state.get("tokens", 0)), client_state.get("objective")
