"""Pretraining's objective: next-token cross-entropy on windows of the token shards.

Batches are random windows that are a pure function of (seed, step, micro, rank) (`TokenWindows`); during the
WSD decay they come from the anneal split when there is one. Validation scores the same windows of the val
split every time and reports mean nats per token and, with the tokenizer's byte lengths, bits per byte.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from components.model import build_model as build_llama
from components.tokenize import require_compatible
from components.train.data import TokenWindows, split_shards, val_batches
from components.train.evaluate import bits_per_byte, token_bytes
from components.train.params import TrainConfig
from components.train.schedule import in_decay


def token_losses(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every next-token prediction in `input_ids`, shape (rows, seq_len - 1)."""
    logits = model(input_ids=input_ids[:, :-1], use_cache=False).logits
    # in float32 even under bf16: a log-softmax over the vocabulary in bf16 loses the small probabilities
    return F.cross_entropy(logits.float().flatten(0, 1), input_ids[:, 1:].flatten(), reduction="none").view(
        input_ids.shape[0], -1)


def build_model(cfg: TrainConfig):
    """A freshly initialised model of the configured size (the same seed gives the same weights)."""
    return build_llama(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id, seed=cfg.seed)


class Objective:
    def __init__(self, cfg: TrainConfig):
        require_compatible(cfg.token_dir, cfg.vocab_size, cfg.tokenizer_digest)
        self.cfg = cfg
        # UTF-8 bytes per token id, for bits per byte; without the tokenizer only the loss is reported
        lengths = token_bytes(cfg.tokenizer_dir, cfg.vocab_size) if cfg.tokenizer_dir else None
        self.byte_table = None if lengths is None else torch.from_numpy(lengths)

    def build_model(self):
        return build_model(self.cfg)

    def train_batches(self, rank: int, world: int):
        cfg = self.cfg

        def windows(split: str) -> TokenWindows:
            return TokenWindows(split_shards(cfg.token_dir, split), cfg.model.seq_len, cfg.micro_batch, cfg.seed,
                                rank, world)

        train = windows("train")
        anneal = windows("anneal") if split_shards(cfg.token_dir, "anneal") else train

        def batch(step: int, micro: int) -> dict:
            decaying = in_decay(step, cfg.steps, cfg.warmup, cfg.decay_fraction)
            return {"input_ids": (anneal if decaying else train).batch(step, micro)}

        return batch

    def loss(self, model, batch: dict):
        return token_losses(model, batch["input_ids"]).mean(), {}

    def tokens(self, batch: dict) -> int:
        return batch["input_ids"][:, 1:].numel()

    def val_batches(self, rank: int, world: int):
        cfg = self.cfg
        shards = split_shards(cfg.token_dir, "val")
        if not shards:
            return []
        return ({"input_ids": b} for b in val_batches(shards, cfg.model.seq_len, cfg.micro_batch, cfg.val_batches,
                                                      rank, world))

    def val_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        input_ids = batch["input_ids"]
        losses = token_losses(model, input_ids).double()
        sums = {"loss": losses.sum(), "tokens": torch.tensor(float(losses.numel()), dtype=torch.float64)}
        if self.byte_table is not None:
            n_bytes = self.byte_table.to(input_ids.device)[input_ids[:, 1:]]
            # special tokens stand for no text: their loss is left out of bits per byte (as nanochat does)
            sums |= {"text_loss": losses[n_bytes > 0].sum(), "bytes": n_bytes.sum().double()}
        return sums

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("tokens"):
            return {}
        result = {"val_loss": sums["loss"] / sums["tokens"]}
        if sums.get("bytes"):
            result["val_bpb"] = bits_per_byte(sums["text_loss"], sums["bytes"])
        return result
