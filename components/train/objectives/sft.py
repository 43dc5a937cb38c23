"""Supervised fine-tuning: next-token loss on the assistant's tokens only, conversations packed into rows.

The data is the `sft_data` stage's output: per conversation, the ids of the chat-templated text and a mask
of the tokens the assistant says (its replies, each reply's `<|im_end|>` and the final end-of-text token: the
stop tokens are trained, so the model learns to stop). Labels are shifted inside each conversation, so a
token is only ever predicted from its own conversation, and the prompt's tokens are never targets.

Packing: conversations are laid one after another into rows of `seq_len` tokens (a seeded shuffle, then a new
row whenever the next one does not fit; `pack: false` gives one per row). Attention stays inside each
conversation: position ids restart at 0 for each, from which transformers builds a block-diagonal causal mask
(SDPA, eager) or variable-length flash-attention calls. A packed row therefore gives the same loss as its
conversations one by one (tested). `use_cache=False` matters: with a cache, transformers skips that detection.

The loss is the mean over every trained token of the whole optimizer step (all micro-batches, all ranks), not
a mean of per-micro-batch means, in which a micro-batch with three trained tokens would weigh as much as a full
one. Batches are a pure function of the step, so every rank knows the step's token count without talking.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from components.model.load import load_pretrained
from components.tokenizer import tokenizer_digest
from components.train.objectives.sampling import EpochSampler, dealt
from components.train.params import TrainConfig

IGNORE = -100  # label of a position that is not trained (transformers' and PyTorch's convention)


class DataMismatch(ValueError):
    """The SFT examples were tokenized for another model than the one being fine-tuned."""


@dataclass(frozen=True)
class Rows:
    """Packed rows: model inputs, shifted labels, position ids, and per row the trained and real token counts."""

    input_ids: np.ndarray  # (rows, seq_len) int64
    labels: np.ndarray  # (rows, seq_len) int64, IGNORE where nothing is trained
    position_ids: np.ndarray  # (rows, seq_len) int64, restarting at 0 for each conversation (and the padding)
    trained: np.ndarray  # (rows,) tokens whose label is trained
    real: np.ndarray  # (rows,) tokens that belong to a conversation (not padding)

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, index) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(self.input_ids[index]), "labels": torch.from_numpy(self.labels[index]),
                "position_ids": torch.from_numpy(self.position_ids[index]),
                "tokens": torch.tensor(int(self.real[index].sum()))}


def read_examples(data_dir: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, assistant mask) of every conversation in `examples-<split>.parquet`, in file order."""
    path = Path(data_dir) / f"examples-{split}.parquet"
    if not path.exists():
        return []
    table = pq.read_table(path, columns=["input_ids", "assistant_mask"])
    ids, masks = table.column("input_ids").to_pylist(), table.column("assistant_mask").to_pylist()
    return [(np.asarray(i, dtype=np.int64), np.asarray(m, dtype=bool)) for i, m in zip(ids, masks)]


def pack(examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pad_id: int, packed: bool = True) -> Rows:
    """Lay the conversations, in the order given, into rows of `seq_len` tokens."""
    too_long = [i for i, (ids, _) in enumerate(examples) if len(ids) > seq_len]
    if too_long:
        raise ValueError(f"{len(too_long)} conversation(s) are longer than the {seq_len}-token rows (the first is "
                         f"#{too_long[0]}, {len(examples[too_long[0]][0])} tokens): set sft_data.max_seq_len to "
                         f"at most sft.seq_len")
    rows: list[list[int]] = []
    room = 0
    for index, (ids, _) in enumerate(examples):
        if not packed or len(ids) > room:
            rows.append([])
            room = seq_len
        rows[-1].append(index)
        room -= len(ids)
    shape = (len(rows), seq_len)
    out = Rows(np.full(shape, pad_id, dtype=np.int64), np.full(shape, IGNORE, dtype=np.int64),
               np.zeros(shape, dtype=np.int64), np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows), dtype=np.int64))
    for row, members in enumerate(rows):
        at = 0
        for index in members:
            ids, mask = examples[index]
            n = len(ids)
            out.input_ids[row, at:at + n] = ids
            out.labels[row, at:at + n - 1] = np.where(mask[1:], ids[1:], IGNORE)  # predict token t+1 from t
            out.position_ids[row, at:at + n] = np.arange(n)
            at += n
        out.position_ids[row, at:] = np.arange(seq_len - at)  # the padding is a "conversation" of its own
        out.trained[row] = int((out.labels[row] != IGNORE).sum())
        out.real[row] = at
    return out


def build_model(cfg: TrainConfig):
    """The model being fine-tuned, in float32 (the engine keeps fp32 master weights under bf16)."""
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, cfg.init_from)


def check_data(cfg: TrainConfig) -> dict:
    """The examples' manifest, once it is clear they were tokenized with the model's own tokenizer."""
    if cfg.init_from is None:
        raise ValueError("the sft objective fine-tunes a model: set init_from to its Hugging Face folder")
    manifest = json.loads((Path(cfg.token_dir) / "manifest.json").read_text())
    model_digest = tokenizer_digest(cfg.init_from)
    if manifest["tokenizer_digest"] != model_digest:
        raise DataMismatch(f"the SFT examples in {cfg.token_dir} were tokenized with tokenizer "
                           f"{manifest['tokenizer_digest'][:12]}, but the model in {cfg.init_from} uses "
                           f"{model_digest[:12]}: the ids would mean other words. Tokenize the examples with the "
                           f"model's tokenizer (sft_data.tokenizer: {cfg.init_from})")
    model_vocab = json.loads((Path(cfg.init_from) / "config.json").read_text())["vocab_size"]
    if manifest["vocab_size"] > model_vocab:
        raise DataMismatch(f"the SFT examples use a {manifest['vocab_size']}-token vocabulary, the model in "
                           f"{cfg.init_from} has {model_vocab} embeddings")
    return manifest


class Objective:
    def __init__(self, cfg: TrainConfig):
        check_data(cfg)
        self.cfg = cfg

    def build_model(self):
        return build_model(self.cfg)

    def rows(self, split: str) -> Rows:
        examples = read_examples(self.cfg.token_dir, split)
        if split == "train":  # mix the sources before packing; the order of rows is shuffled per epoch below
            examples = [examples[i] for i in np.random.default_rng([self.cfg.seed]).permutation(len(examples))]
        return pack(examples, self.cfg.model.seq_len, self.cfg.pad_id, self.cfg.pack)

    def train_size(self) -> int:
        return len(self.rows("train"))

    def train_batches(self, rank: int, world: int):
        cfg, rows = self.cfg, self.rows("train")
        if not len(rows):
            raise ValueError(f"no training conversations in {cfg.token_dir}")
        sampler = EpochSampler(len(rows), cfg.seed, cfg.micro_batch, cfg.grad_accum, world)

        def batch(step: int, micro: int) -> dict[str, torch.Tensor]:
            # DeepSpeed divides by grad_accum and averages over ranks: undo both, divide by the step's count
            scale = cfg.grad_accum * world / max(int(rows.trained[sampler.step(step)].sum()), 1)
            return rows.take(sampler.batch(step, micro, rank)) | {"scale": torch.tensor(scale)}

        return batch

    def loss(self, model, batch: dict):
        return masked_loss_sum(model, batch) * batch["scale"], {}

    def tokens(self, batch: dict) -> int:
        return int(batch["tokens"])

    def val_batches(self, rank: int, world: int):
        rows, size = self.rows("val"), self.cfg.micro_batch
        for index in dealt(min(self.cfg.val_batches, len(rows) // size), rank, world):
            yield rows.take(np.arange(index * size, (index + 1) * size))

    def val_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": masked_loss_sum(model, batch).double(),
                "tokens": (batch["labels"] != IGNORE).sum().double()}

    def val_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"val_loss": sums["loss"] / sums["tokens"]} if sums.get("tokens") else {}


def masked_loss_sum(model, batch: dict) -> torch.Tensor:
    """Summed cross-entropy (nats) of the trained tokens of the batch."""
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE,
                           reduction="sum")
