"""Reward modelling: a scalar head on the chat model, trained with the Bradley-Terry loss on preference pairs.

P(chosen ≻ rejected) = σ(r_chosen − r_rejected), so the loss is −log σ(r_chosen − r_rejected − margin), with
an optional per-pair margin (Llama 2) and an optional centering term coef·(r_chosen + r_rejected)² that keeps
the rewards near zero (Eisenstein et al. 2023; TRL's `center_rewards_coefficient`). The model is
`AutoModelForSequenceClassification` with one label: transformers reads the score at the last non-padding
token (the end-of-text that closes the reply), so the exported folder loads and scores with no code of ours.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from components.model.load import load_pretrained
from components.train.objectives.options import RewardOptions as Options  # params read it without torch
from components.train.objectives.pairs import read_pairs
from components.train.objectives.sampling import EpochSampler, dealt
from components.train.objectives.sft import check_data
from components.train.params import TrainConfig


def build_model(cfg: TrainConfig):
    from transformers import AutoModelForSequenceClassification

    with torch.random.fork_rng(devices=[]):  # the new score head starts the same on every rank and every run
        torch.manual_seed(cfg.seed)
        model = load_pretrained(AutoModelForSequenceClassification, cfg.init_from, num_labels=1)
    model.config.pad_token_id = cfg.pad_id  # where the score is read: the last token that is not padding
    return model


def scores(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) of a pair batch, in float32."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return rewards.squeeze(-1).float().chunk(2)


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0,
                  center_coef: float = 0.0) -> torch.Tensor:
    """Per-pair loss."""
    loss = -F.logsigmoid(chosen - rejected - margin)
    return loss + center_coef * (chosen + rejected) ** 2 if center_coef else loss


class Objective:
    def __init__(self, cfg: TrainConfig):
        check_data(cfg)
        self.cfg, self.options = cfg, Options(**cfg.options)

    def build_model(self):
        return build_model(self.cfg)

    def train_size(self) -> int:
        return len(read_pairs(self.cfg.token_dir, "train"))

    def train_batches(self, rank: int, world: int):
        cfg, pairs = self.cfg, read_pairs(self.cfg.token_dir, "train")
        sampler = EpochSampler(len(pairs), cfg.seed, cfg.micro_batch, cfg.grad_accum, world)
        return lambda step, micro: pairs.take(sampler.batch(step, micro, rank), cfg.pad_id)

    def loss(self, model, batch: dict):
        chosen, rejected = scores(model, batch)
        loss = bradley_terry(chosen, rejected, self.options.margin, self.options.center_coef).mean()
        gap = (chosen - rejected).detach()
        return loss, {"accuracy": (gap > 0).float().mean(), "reward_margin": gap.mean(),
                      "reward_chosen": chosen.detach().mean(), "reward_rejected": rejected.detach().mean()}

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def val_batches(self, rank: int, world: int):
        pairs, size = read_pairs(self.cfg.token_dir, "val"), self.cfg.micro_batch
        for index in dealt(min(self.cfg.val_batches, len(pairs) // size), rank, world):
            yield pairs.take(np.arange(index * size, (index + 1) * size), self.cfg.pad_id)

    def val_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        chosen, rejected = scores(model, batch)
        gap = (chosen - rejected).double()
        return {"loss": bradley_terry(chosen, rejected, self.options.margin, self.options.center_coef).double().sum(),
                "pairs": torch.tensor(float(len(gap)), dtype=torch.float64), "correct": (gap > 0).double().sum(),
                "margin": gap.sum()}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("pairs"):
            return {}
        return {"val_loss": sums["loss"] / sums["pairs"], "val_accuracy": sums["correct"] / sums["pairs"],
                "val_reward_margin": sums["margin"] / sums["pairs"]}
