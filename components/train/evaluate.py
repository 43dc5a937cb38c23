"""Bits per byte: a loss that does not depend on the tokenizer, and the unigram baseline it must beat.

Cross-entropy per token rewards a tokenizer with longer tokens; dividing the summed loss (in bits) by the
UTF-8 bytes the predicted tokens stand for compares models across vocabularies (as nanochat and the
Pile/GPT-NeoX papers report). Special tokens (EOT and friends) stand for no text: they carry 0 bytes and
their loss is left out, as nanochat does.

The baseline is the best model that ignores context: the train split's token frequencies (add-one
smoothed), scored on exactly the validation windows the model is scored on.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte ↔ printable-char map

from components.train.data import TokenStream, split_shards, val_batches

# Counting the train split's tokens costs one pass over it: at 15T tokens that would be hours, and a sample of
# a billion tokens pins unigram frequencies far more tightly than the baseline needs.
UNIGRAM_SAMPLE_TOKENS = 1_000_000_000


def token_bytes(tokenizer_dir: Path, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens and unused ids), from a byte-level BPE vocab."""
    import json

    vocab = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for token, token_id in vocab["model"]["vocab"].items():
        if token_id < vocab_size:
            lengths[token_id] = sum(1 for char in token if char in to_byte)
    for special in vocab.get("added_tokens", []):
        if special["id"] < vocab_size:
            lengths[special["id"]] = 0
    return lengths


def bits_per_byte(loss_nats_sum: float, n_bytes: float) -> float:
    return loss_nats_sum / (math.log(2) * n_bytes)


def unigram_bits_per_byte(token_dir: Path, lengths: np.ndarray, seq_len: int, micro_batch: int,
                          max_batches: int, world: int) -> dict[str, float]:
    """{unigram_bpb, unigram_loss}: the unigram model of the train split on the validation windows that
    `val_batches` deals to `world` ranks (so the same tokens the model's validation scores)."""
    vocab = len(lengths)
    stream = TokenStream(split_shards(token_dir, "train"))
    counts = np.ones(vocab, dtype=np.float64)  # add-one: an id unseen in training still has a probability
    for start in range(0, min(stream.size, UNIGRAM_SAMPLE_TOKENS), 1 << 24):
        chunk = stream.read(start, min(1 << 24, stream.size - start))
        counts += np.bincount(chunk, minlength=vocab)[:vocab]
    log_p = np.log(counts / counts.sum())
    loss_sum, loss_tokens, bpb_loss, n_bytes = 0.0, 0, 0.0, 0
    val = split_shards(token_dir, "val")
    for rank in range(world):
        for batch in val_batches(val, seq_len, micro_batch, max_batches, rank, world):
            targets = batch[:, 1:].numpy().ravel()
            nll = -log_p[targets]
            loss_sum, loss_tokens = loss_sum + nll.sum(), loss_tokens + targets.size
            text = lengths[targets] > 0
            bpb_loss, n_bytes = bpb_loss + nll[text].sum(), n_bytes + lengths[targets].sum()
    if not loss_tokens:
        raise ValueError(f"no validation windows in {token_dir}: the val split is empty or shorter than one window")
    return {"unigram_loss": loss_sum / loss_tokens, "unigram_bpb": bits_per_byte(bpb_loss, n_bytes)}
