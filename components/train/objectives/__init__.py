"""Training objectives: the one seam between the DeepSpeed engine and what is being learned.

The engine (`components.train.engine`) owns everything that does not depend on the objective: launching,
ZeRO, precision, the LR schedule, gradient accumulation, checkpoints and exact resume, MFU, metric rows. An
objective owns the rest, and nothing else:

- `build_model()`: the weights training starts from (a fresh model, or a Hugging Face folder to fine-tune);
- `train_size()` (fine-tuning objectives): the rows one epoch has, from which a stage sets the steps;
- `train_batches(rank, world)`: a function `(step, micro) -> batch`, a dict of CPU tensors that depends on
  nothing but its arguments and the config (that is what makes a resumed run identical to an uninterrupted
  one);
- `loss(model, batch)`: the loss to back-propagate and the extra metrics to log, as detached scalars;
- `tokens(batch)`: the tokens a batch trains on, for tokens/s and MFU;
- `val_batches(rank, world)`, `val_sums(model, batch)`, `val_metrics(sums)`: validation as sums that the
  engine all-reduces across ranks before the objective turns them into metrics.

Optional, for objectives whose batches depend on the model being trained (PPO samples its rollouts from the
policy): `attach(model, mean_over_ranks)` before the first batch, and `state_dict()` / `load_state_dict(state)`
for what they carry between steps (saved in every checkpoint); a module-level `exported(model)` names the part
of the trained module that becomes the output (PPO trains the policy and a value model, and exports the policy).

Objectives hold no launch, parallelism or checkpoint code (torchtitan keeps its models free of parallelism;
this keeps the objectives free of it too). Each is one small module here, named in `TrainConfig.objective`.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import torch

    from components.train.params import TrainConfig

Batch = dict[str, "torch.Tensor"]

# objective name → its module; each module defines `Objective(cfg)`
MODULES = {name: f"components.train.objectives.{name}" for name in ("causal_lm", "sft", "reward", "dpo", "ppo")}


class Objective(Protocol):
    def build_model(self): ...

    def train_batches(self, rank: int, world: int) -> Callable[[int, int], Batch]: ...

    def loss(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def tokens(self, batch: Batch) -> int: ...

    def val_batches(self, rank: int, world: int) -> Iterable[Batch]: ...

    def val_sums(self, model, batch: Batch) -> dict[str, torch.Tensor]: ...

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]: ...


def build_model(cfg: TrainConfig):
    """The model `cfg`'s training starts from, without touching its data (the export rebuilds it with this)."""
    return import_module(MODULES[cfg.objective]).build_model(cfg)


def exported(cfg: TrainConfig, model):
    """The part of the trained module that is the stage's model (all of it, unless the objective says)."""
    module = import_module(MODULES[cfg.objective])
    return module.exported(model) if hasattr(module, "exported") else model


def objective_for(cfg: TrainConfig) -> Objective:
    """The objective `cfg` names. Constructing it checks its data against the model's tokenizer (cheaply, before
    any process group exists), so a mismatch is refused with its reason instead of failing on every rank."""
    return import_module(MODULES[cfg.objective]).Objective(cfg)
