"""Pretraining's objective: next-token cross-entropy on windows of the token shards.

Batches are windows of the token stream, each once per epoch in a seeded order, a pure function of
(seed, step, micro, rank) (`TokenWindows`); during the WSD decay they come from the anneal split when there is
one. Validation scores the same windows of the val split every time and reports mean nats per token and, with
the tokenizer's byte lengths, bits per byte.

The loss never holds the whole (tokens × vocabulary) logits: the LM head and the cross-entropy run on chunks of
tokens, each recomputed in the backward pass (`chunked_token_losses`). At the gpu presets' 32k tokens per
micro-batch and 32k vocabulary the full fp32 logits would be 4 GiB, plus their bf16 copy and gradient.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from components.model import build_model as build_llama
from components.params import StrictModel
from components.tokenize import require_compatible
from components.train.data import TokenWindows, split_shards, val_batches
from components.train.evaluate import bits_per_byte, token_bytes
from components.train.params import TrainConfig
from components.train.schedule import in_decay


# Logits elements per chunk: 2^26 fp32 values are 256 MiB, i.e. 2,048 tokens at a 32k vocabulary; the head's
# matmul per chunk (2048 × width × 32k) is still large enough to keep a GPU's tensor cores busy.
CHUNK_ELEMENTS = 2**26


def token_losses(model, input_ids: torch.Tensor, chunk_elements: int | None = CHUNK_ELEMENTS) -> torch.Tensor:
    """Cross-entropy of every next-token prediction in `input_ids`, shape (rows, seq_len - 1); all the logits
    at once when `chunk_elements` is None.

    `model` is the HF model or the DeepSpeed engine around it: the forward goes through it whole (ZeRO-3's
    hooks, the engine's bookkeeping) but keeps no logits, and returns the final hidden states."""
    out = model(input_ids=input_ids[:, :-1], use_cache=False, output_hidden_states=True,
                # an empty index: the HF head computes no logits; they are made per chunk below
                logits_to_keep=torch.empty(0, dtype=torch.long, device=input_ids.device))
    head = _module(model).get_output_embeddings()
    return chunked_token_losses(head, out.hidden_states[-1], input_ids[:, 1:], chunk_elements)


def chunked_token_losses(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                         chunk_elements: int | None = CHUNK_ELEMENTS) -> torch.Tensor:
    """`cross_entropy(head(hidden).float(), targets)` per token, without ever holding more than
    `chunk_elements` logits: each chunk's logits are made, scored and dropped, and made again in the backward
    pass (activation checkpointing of the head: +1 head forward, i.e. ~1/3 more head FLOPs, for O(chunk)
    instead of O(tokens × vocab) memory). When all the logits fit in one chunk (the tiny CPU runs) it is the
    plain loss."""
    flat_hidden, flat_targets = hidden.flatten(0, 1), targets.flatten()
    rows = len(flat_targets) if chunk_elements is None else max(1, chunk_elements // head.out_features)
    if len(flat_targets) <= rows:  # one chunk: recomputing it would save nothing
        return _head_losses(head, flat_hidden, flat_targets).view(targets.shape)
    recompute = torch.is_grad_enabled()
    losses = [checkpoint(_head_losses, head, h, t, use_reentrant=False) if recompute else _head_losses(head, h, t)
              for h, t in zip(flat_hidden.split(rows), flat_targets.split(rows))]
    return torch.cat(losses).view(targets.shape)


def _head_losses(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # in float32 even under bf16: a log-softmax over the vocabulary in bf16 loses the small probabilities
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def _module(model):
    """The HF model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def build_model(cfg: TrainConfig):
    """A freshly initialised model of the configured size (the same seed gives the same weights)."""
    return build_llama(cfg.model, cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id, seed=cfg.seed)


class Options(StrictModel):
    loss: Literal["chunked", "plain"] = Field(
        "chunked", description="chunked: the LM head and cross-entropy per chunk of CHUNK_ELEMENTS logits, "
                               "recomputed in the backward; plain: all the logits at once (for comparison)")


class Objective:
    def __init__(self, cfg: TrainConfig):
        require_compatible(cfg.token_dir, cfg.vocab_size, cfg.tokenizer_digest)
        self.cfg = cfg
        self.chunk_elements = CHUNK_ELEMENTS if Options(**cfg.options).loss == "chunked" else None
        # UTF-8 bytes per token id, for bits per byte; without the tokenizer only the loss is reported
        lengths = token_bytes(cfg.tokenizer_dir, cfg.vocab_size) if cfg.tokenizer_dir else None
        self.byte_table = None if lengths is None else torch.from_numpy(lengths)

    def build_model(self):
        return build_model(self.cfg)

    def train_batches(self, rank: int, world: int):
        cfg = self.cfg

        def windows(split: str) -> TokenWindows:
            return TokenWindows(split_shards(cfg.token_dir, split), cfg.model.seq_len, cfg.micro_batch, cfg.seed,
                                rank, world, cfg.grad_accum)

        train = windows("train")
        anneal = windows("anneal") if split_shards(cfg.token_dir, "anneal") else train

        def batch(step: int, micro: int) -> dict:
            decaying = in_decay(step, cfg.steps, cfg.warmup, cfg.decay_fraction)
            return {"input_ids": (anneal if decaying else train).batch(step, micro)}

        return batch

    def loss(self, model, batch: dict):
        return token_losses(model, batch["input_ids"], self.chunk_elements).mean(), {}

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
        losses = token_losses(model, input_ids, self.chunk_elements).double()
        sums = {"loss": losses.sum(), "tokens": torch.tensor(float(losses.numel()), dtype=torch.float64,
                                                                    device=losses.device)}
        if self.byte_table is not None:
            n_bytes = self.byte_table.to(input_ids.device)[input_ids[:, 1:]]
            # special tokens stand for no text: their loss is left out of bits per byte (as nanochat does)
            # a product, not `losses[n_bytes > 0]`: boolean indexing waits for the device to count the rows
            sums |= {"text_loss": (losses * (n_bytes > 0)).sum(), "bytes": n_bytes.sum().double()}
        return sums

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("tokens"):
            return {}
        result = {"val_loss": sums["loss"] / sums["tokens"]}
        if sums.get("bytes"):
            result["val_bpb"] = bits_per_byte(sums["text_loss"], sums["bytes"])
        return result
