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
is replaced atomically (and the folder fsynced) only after every rank has finished writing, so a crash mid-save
leaves the previous checkpoint in charge. A batch depends on the global batch size, not on the number of ranks
(samples are drawn by global sample index), so a checkpoint written by N ranks resumes on M ranks with the same
global batch: it is converted to DeepSpeed's universal checkpoint first (`_reshard_latest`).

The critical path waits for the device only on logged and checkpointed steps: the next micro-batch is read and
copied ahead on a worker thread (`_Prefetched`), and the loss is reduced over ranks only for a metrics row.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.constants import default_pg_timeout
from transformers.modeling_layers import GradientCheckpointingLayer

from components.model import flops_per_token
from components.train.mfu import mfu, peak_flops
from components.train.objectives import objective_for
from components.train.params import TrainConfig
from components.train.schedule import lr_at
from components.train.watchdog import StepWatchdog

LATEST = "latest"  # the marker's name is DeepSpeed's own, so `load_checkpoint(dir)` finds it too
SHAPE = "shape.json"  # in each step-N folder: the number of ranks and the global batch that wrote it


def deepspeed_config(cfg: TrainConfig, world: int, load_universal: bool = False) -> dict:
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
    if load_universal:  # resuming a checkpoint written by another number of ranks (`_reshard_latest`)
        config["checkpoint"] = {**config.get("checkpoint", {}), "load_universal": True}
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
    universal = _reshard_latest(cfg, world)
    engine = _engine(cfg, world, objective, load_universal=universal is not None)
    if rank == 0:
        cfg.ckpt_dir.mkdir(parents=True, exist_ok=True)
        (cfg.ckpt_dir / "ds_config.json").write_text(json.dumps(deepspeed_config(cfg, world), indent=2) + "\n")
    if hasattr(objective, "attach"):  # an objective whose batches come from the model being trained (PPO)
        objective.attach(engine, lambda value: _mean_over_ranks(value, engine.device))
    start, tokens, state = _resume(engine, cfg.ckpt_dir, universal)
    if state is not None:
        objective.load_state_dict(state)
    batches = _prefetched(objective, rank, world, engine.device, cfg.grad_accum)
    flops = flops_per_token(engine.module.config, cfg.model.seq_len)["train"]
    peak = cfg.peak_flops or peak_flops(engine.device, cfg.bf16)[0]
    loss, val, unreduced_tokens = None, {}, 0
    watchdog = _watchdog(cfg, rank).start(start)
    try:
        for step in range(start, cfg.steps):  # 0-based; step-N checkpoints hold N finished steps
            began = time.perf_counter()
            lr = _set_lr(engine, cfg, step)
            sums, step_tokens = _train_step(engine, objective, batches, step, cfg.grad_accum)
            unreduced_tokens += step_tokens
            done = step + 1
            logging = done % cfg.log_every == 0 or done == cfg.steps
            saving = done == cfg.steps or (cfg.ckpt_every and done % cfg.ckpt_every == 0)
            row = {}
            if logging or saving:  # the only steps that wait for the device and the other ranks
                stats, all_tokens = _reduce(sums, [step_tokens, unreduced_tokens], engine.device, cfg.grad_accum)
                tokens, unreduced_tokens = tokens + int(all_tokens[1]), 0
                loss = stats.pop("loss")
            if logging:
                tokens_per_s = all_tokens[0] / (time.perf_counter() - began)
                row = {"loss": loss, "lr": lr, "grad_norm": _grad_norm(engine), "tokens_per_s": tokens_per_s,
                       "mfu": mfu(flops, tokens_per_s, world, peak), **stats}
            watchdog.beat(done)
            if cfg.val_batches and (done == cfg.steps or (cfg.val_every and done % cfg.val_every == 0)):
                with watchdog.phase("validation", _PHASE_LIMIT_S):
                    val = _validate(engine, objective, rank, world)
                row |= val
            if rank == 0 and cfg.on_metrics and row:
                cfg.on_metrics({"step": done, **row})
            if saving:
                with watchdog.phase("checkpoint save", _PHASE_LIMIT_S):
                    save(engine, cfg.ckpt_dir, done, cfg.keep_last, tokens, _objective_state(objective))
            if cfg.step_pause_s:
                time.sleep(cfg.step_pause_s)
    finally:  # an exception must not leave it running: it would end the process that handles it
        watchdog.stop()
    batches.close()
    if cfg.val_batches and not val:  # resumed after the last step: nothing trained, still report validation
        val = _validate(engine, objective, rank, world)
    return {"steps": cfg.steps, "resumed_from": start, "final_loss": loss, **val, "tokens": tokens,
            "world": world, "peak_flops": peak, "train_flops_per_token": flops, "ckpt_dir": str(cfg.ckpt_dir)}


# The first step (warm-up, compilation), validation and checkpoint saves may honestly take longer than a step:
# they get the process group's own time-out (DEEPSPEED_TIMEOUT minutes), which their collectives must meet anyway.
_PHASE_LIMIT_S = default_pg_timeout.total_seconds()


def _watchdog(cfg: TrainConfig, rank: int) -> StepWatchdog:
    def resume_hint() -> str:
        step = latest_step(cfg.ckpt_dir)
        return "the start (no checkpoint yet)" if step is None else f"checkpoint step-{step} in {cfg.ckpt_dir}"

    return StepWatchdog(cfg.step_timeout_s, rank, resume_hint, first_limit_s=_PHASE_LIMIT_S)


def _engine(cfg: TrainConfig, world: int, objective, load_universal: bool = False):
    model = _built(objective)
    if cfg.activation_checkpointing:
        model.gradient_checkpointing_enable()
    per_block = cfg.compile and cfg.compile_mode == "blocks" and cfg.zero_stage < 3
    if per_block:
        compile_blocks(model)
    # fused: one kernel for all of a group's tensors, on CPU too (torch ≥ 2.4); on one CPU rank at ZeRO-2 the
    # default for-each AdamW cost 24 ms of a 0.9 s step (benchmarks/RESULTS.md)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(cfg, world, load_universal))
    if cfg.compile and not per_block:
        engine.compile()  # the whole model; at ZeRO-3 DeepSpeed's backend knows its parameter-gathering hooks
    return engine


def _built(objective):
    """The objective's model, its weights made directly on the accelerator when there is one: building an 8B
    model in fp32 on the host first would take 32 GB of host memory per rank."""
    if not torch.cuda.is_available():
        return objective.build_model()
    with torch.device(get_accelerator().current_device_name()):
        return objective.build_model()


def compile_blocks(model) -> list[torch.nn.Module]:
    """`torch.compile` each decoder block in place (torchtitan's way), not the whole model: the causal mask is
    made eagerly outside the blocks, where transformers hands SDPA `is_causal` and no T×T mask (which would
    rule out the flash kernel), and each block's gradients are ready for reduction as soon as its backward
    ends. In place, so parameter names (checkpoints, export) do not change. Returns the blocks compiled."""
    blocks = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for block in blocks:
        block.compile()
    return blocks


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


class _Prefetched:
    """`batches(step, micro)` on the device, the next micro-batch already read, pinned and on its way on a
    worker thread while this one trains: reading windows from the memory-mapped shards and a blocking copy
    from pageable memory leave the critical path. Asked in order (the training loop's); any other request is
    read directly. Objectives whose batches depend on the model being trained (PPO: `attach`) are read
    directly, never ahead."""

    def __init__(self, batches, device, grad_accum: int, ahead: bool):
        self.batches, self.device, self.grad_accum = batches, torch.device(device), grad_accum
        self.pin = self.device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") if ahead else None
        self.pending: tuple[tuple[int, int], Future] | None = None

    def __call__(self, step: int, micro: int) -> tuple[dict, dict]:
        """(the batch as the objective made it, the same on the device)."""
        key = (step, micro)
        if self.pending is not None and self.pending[0] == key:
            batch = self.pending[1].result()
        else:
            batch = self._read(key)
        if self.pool is not None:
            following = (step, micro + 1) if micro + 1 < self.grad_accum else (step + 1, 0)
            self.pending = (following, self.pool.submit(self._read, following))
        return batch, {name: value.to(self.device, non_blocking=self.pin) for name, value in batch.items()}

    def _read(self, key: tuple[int, int]) -> dict:
        batch = self.batches(*key)
        if not self.pin:
            return batch
        return {name: value.pin_memory() if value.device.type == "cpu" else value for name, value in batch.items()}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _prefetched(objective, rank: int, world: int, device, grad_accum: int) -> _Prefetched:
    return _Prefetched(objective.train_batches(rank, world), device, grad_accum, ahead=not hasattr(objective, "attach"))


def _to(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def _train_step(engine, objective, batches, step: int, grad_accum: int) -> tuple[dict[str, torch.Tensor], int]:
    """One optimizer step. Returns the loss and the objective's metrics summed over micro-batches, on the
    device and not yet reduced over ranks (no wait for the device here), and this rank's tokens."""
    sums, tokens = None, 0
    for micro in range(grad_accum):
        batch, on_device = batches(step, micro)
        loss, metrics = objective.loss(engine, on_device)
        engine.backward(loss)  # DeepSpeed divides by grad_accum itself
        engine.step()  # only steps the optimizer at the accumulation boundary
        values = {"loss": loss.detach(), **metrics}
        if sums is None:  # on the device, where the collective runs: NCCL has no CPU tensors
            sums = {key: torch.zeros((), dtype=torch.float64, device=engine.device) for key in values}
        for key, value in values.items():
            sums[key] += value.double()
        tokens += objective.tokens(batch)
    return sums, tokens


def _reduce(sums: dict[str, torch.Tensor], counts: list[int], device, grad_accum: int) -> tuple[dict, list[float]]:
    """The step's metrics averaged over micro-batches and ranks, and `counts` summed over ranks: one
    all-reduce, one copy to the host (every rank gets the same numbers)."""
    names = list(sums)
    reduced = torch.cat([torch.stack([sums[key] for key in names]),
                         torch.tensor(counts, dtype=torch.float64, device=device)])
    dist.all_reduce(reduced)
    values = reduced.tolist()
    world = dist.get_world_size()
    return {key: value / (grad_accum * world) for key, value in zip(names, values)}, values[len(names):]


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
    if dist.get_rank() == 0:  # what a resume on another number of ranks must know before it builds its engine
        shape = {"world": dist.get_world_size(), "global_batch": engine.train_batch_size()}
        (ckpt_dir / tag / SHAPE).write_text(json.dumps(shape) + "\n")
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
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the rename itself is durable only once the folder's entry is on disk (a power cut may undo it)
        os.fsync(directory)
    finally:
        os.close(directory)


def checkpoints(ckpt_dir: Path) -> list[int]:
    """Steps of the checkpoint folders present, oldest first (complete or not: only `latest` vouches)."""
    found = (re.fullmatch(r"step-(\d+)", p.name) for p in Path(ckpt_dir).glob("step-*") if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def latest_step(ckpt_dir: Path) -> int | None:
    marker = Path(ckpt_dir) / LATEST
    if not marker.exists():
        return None
    return int(marker.read_text().strip().removeprefix("step-"))


def _resume(engine, ckpt_dir: Path, universal: str | None = None) -> tuple[int, int, dict | None]:
    """Load the newest complete checkpoint (from its universal form `universal` when it was written by another
    number of ranks); returns the steps already done, the tokens they trained on and the objective's saved
    state ((0, 0, None) for a fresh run)."""
    step = latest_step(ckpt_dir)
    if step is None:
        return 0, 0, None
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=universal or f"step-{step}")
    if path is None:
        raise RuntimeError(f"{ckpt_dir / LATEST} names step-{step}, which could not be loaded")
    if universal:
        dist.barrier()  # every rank has read it
        if dist.get_rank() == 0:  # the converted copy, and the marker the converter writes beside it
            shutil.rmtree(ckpt_dir / universal, ignore_errors=True)
            (ckpt_dir / "latest_universal").unlink(missing_ok=True)
    return int(client_state["step"]), int(client_state.get("tokens", 0)), client_state.get("objective")


def _reshard_latest(cfg: TrainConfig, world: int) -> str | None:
    """When the newest checkpoint was written by another number of ranks (a node lost, or added): rank 0
    converts it to DeepSpeed's universal checkpoint (every parameter's fp32 weights and optimizer moments
    whole, `ds_to_universal`), which any number of ranks can load; returns its tag. None when no conversion
    is needed: no checkpoint, the same ranks, or ZeRO-0 (nothing sharded). The global batch must stay the
    same: the batches of a step are drawn by global sample index, so the run then continues the same data
    order and the same loss curve."""
    step = latest_step(cfg.ckpt_dir)
    if step is None or not (cfg.ckpt_dir / f"step-{step}" / SHAPE).exists():  # none, or saved before shapes were
        return None
    shape = json.loads((cfg.ckpt_dir / f"step-{step}" / SHAPE).read_text())
    global_batch = cfg.micro_batch * cfg.grad_accum * world
    if shape["world"] == world:
        return None
    if shape["global_batch"] != global_batch:
        raise ValueError(f"checkpoint step-{step} in {cfg.ckpt_dir} was written by {shape['world']} rank(s) with a "
                         f"global batch of {shape['global_batch']}; these {world} rank(s) make {global_batch} "
                         f"(micro_batch {cfg.micro_batch} × grad_accum {cfg.grad_accum} × {world}): choose micro_batch "
                         f"and grad_accum with micro_batch × grad_accum = {shape['global_batch'] / world:g} to resume it")
    if cfg.zero_stage == 0:
        return None
    universal = f"step-{step}-universal"
    if dist.get_rank() == 0 and not (cfg.ckpt_dir / universal).exists():
        _to_universal(cfg.ckpt_dir / f"step-{step}", cfg.ckpt_dir / universal)
    dist.barrier()
    return universal


def _to_universal(source: Path, target: Path) -> None:
    from argparse import Namespace

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    partial = target.with_name(target.name + ".partial")  # a crash mid-conversion leaves no half-made target
    shutil.rmtree(partial, ignore_errors=True)
    ds_to_universal(Namespace(input_folder=str(source), output_folder=str(partial), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              # an HF model records no universal_checkpoint_info: the converter adds the default
                              inject_missing_state=True))
    os.replace(partial, target)
