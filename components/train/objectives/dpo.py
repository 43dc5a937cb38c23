"""Direct preference optimisation: the policy learns the preferences without a reward model or RL.

With π the policy, π_ref the frozen SFT model and logits = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) −
log π_ref(y_r)) (log-probabilities summed over each reply's tokens):
  sigmoid (Rafailov et al. 2023):  −log σ(β·logits), with label smoothing ε (conservative DPO):
                                   −(1 − ε)·log σ(β·logits) − ε·log σ(−β·logits)
  ipo (Azar et al. 2023, eq. 17):  (logits − 1/(2β))²
the same losses as OpenRLHF's `DPOLoss` on the same log-probabilities (tested). The implicit rewards
β·(log π − log π_ref) of each side are what the field logs: rewards/chosen, rewards/rejected, their margin and
the share of pairs where the chosen one's is higher.

The reference log-probabilities never change, so they are computed once, before training, by the stage
(`reference_logps`) and read with the data: no second model in memory and no extra forward pass per step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.train.objectives.options import DpoOptions as Options  # params read it without torch
from components.train.objectives.pairs import Pairs, read_pairs, reply_logps
from components.train.objectives.sampling import EpochSampler, dealt
from components.train.objectives.sft import build_model, check_data
from components.train.params import TrainConfig

REFERENCE = "reference_logps-{split}.npy"  # (pairs, 2): chosen, rejected


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss: str = "sigmoid",
             label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair DPO loss from summed reply log-probabilities."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing


@torch.no_grad()
def reference_logps(model, pairs: Pairs, pad_id: int, batch_size: int = 8) -> np.ndarray:
    """(pairs, 2) summed log-probabilities of the chosen and rejected replies under the reference `model`."""
    out = np.zeros((len(pairs), 2))
    for first in range(0, len(pairs), batch_size):
        index = np.arange(first, min(first + batch_size, len(pairs)))
        logps = reply_logps(model, pairs.take(index, pad_id)).double().numpy()
        out[index, 0], out[index, 1] = np.split(logps, 2)
    return out


class Objective:
    def __init__(self, cfg: TrainConfig):
        check_data(cfg)
        self.cfg, self.options = cfg, Options(**cfg.options)

    def build_model(self):
        return build_model(self.cfg)

    def _split(self, split: str) -> tuple[Pairs, torch.Tensor]:
        pairs = read_pairs(self.cfg.token_dir, split)
        path = Path(self.options.reference_dir or self.cfg.token_dir) / REFERENCE.format(split=split)
        reference = torch.from_numpy(np.load(path)) if len(pairs) else torch.zeros((0, 2), dtype=torch.float64)
        if len(reference) != len(pairs):
            raise ValueError(f"{path} holds {len(reference)} reference log-probabilities for {len(pairs)} pairs: "
                             "it was computed for other data; delete it to recompute")
        return pairs, reference

    def _with_reference(self, pairs: Pairs, reference: torch.Tensor, index: np.ndarray) -> dict:
        return pairs.take(index, self.cfg.pad_id) | {"ref_chosen": reference[index, 0],
                                                     "ref_rejected": reference[index, 1]}

    def train_size(self) -> int:
        return len(read_pairs(self.cfg.token_dir, "train"))

    def train_batches(self, rank: int, world: int):
        cfg = self.cfg
        pairs, reference = self._split("train")
        sampler = EpochSampler(len(pairs), cfg.seed, cfg.micro_batch, cfg.grad_accum, world)
        return lambda step, micro: self._with_reference(pairs, reference, sampler.batch(step, micro, rank))

    def _sides(self, model, batch: dict) -> dict[str, torch.Tensor]:
        chosen, rejected = reply_logps(model, batch).chunk(2)
        beta = self.options.beta
        loss = dpo_loss(chosen, rejected, batch["ref_chosen"], batch["ref_rejected"], beta, self.options.loss,
                        self.options.label_smoothing)
        reward_chosen = beta * (chosen - batch["ref_chosen"]).detach()
        reward_rejected = beta * (rejected - batch["ref_rejected"]).detach()
        return {"loss": loss, "rewards/chosen": reward_chosen, "rewards/rejected": reward_rejected,
                "rewards/margins": reward_chosen - reward_rejected,
                "rewards/accuracies": (reward_chosen > reward_rejected).float(),
                "logps/chosen": chosen.detach(), "logps/rejected": rejected.detach()}

    def loss(self, model, batch: dict):
        sides = self._sides(model, batch)
        loss = sides.pop("loss").mean()
        return loss, {name: value.mean() for name, value in sides.items()}

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def val_batches(self, rank: int, world: int):
        pairs, reference = self._split("val")
        size = self.cfg.micro_batch
        for index in dealt(min(self.cfg.val_batches, len(pairs) // size), rank, world):
            yield self._with_reference(pairs, reference, np.arange(index * size, (index + 1) * size))

    def val_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        sides = self._sides(model, batch)
        return {name: value.double().sum() for name, value in sides.items()} | {
            "pairs": torch.tensor(float(len(sides["loss"])), dtype=torch.float64)}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        pairs = sums.pop("pairs", 0)
        return {f"val_{name}": value / pairs for name, value in sums.items()} if pairs else {}
