"""Preference pairs, as the reward model and DPO read them from the `preferences` stage's output.

`pairs-<split>.parquet` holds, per pair, the chat-templated conversation ending in the chosen reply and the
one ending in the rejected reply (`chosen_ids`, `rejected_ids`), each with a mask of the reply's own tokens
(`chosen_mask`, `rejected_mask`: the reply, its `<|im_end|>` and the end-of-text token). A batch holds the
chosen rows first and the rejected rows after them, right-padded to the longest, so one forward pass scores
both sides.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from components.train.objectives.sft import IGNORE

COLUMNS = ["chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"]


@dataclass(frozen=True)
class Pairs:
    chosen: list[np.ndarray]
    chosen_mask: list[np.ndarray]
    rejected: list[np.ndarray]
    rejected_mask: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.chosen)

    def take(self, index: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        """Rows `index` as one batch: input_ids, attention_mask and reply labels, chosen rows first."""
        ids = [self.chosen[i] for i in index] + [self.rejected[i] for i in index]
        masks = [self.chosen_mask[i] for i in index] + [self.rejected_mask[i] for i in index]
        width = max(len(row) for row in ids)
        out = {"input_ids": torch.full((len(ids), width), pad_id, dtype=torch.long),
               "attention_mask": torch.zeros((len(ids), width), dtype=torch.long),
               "labels": torch.full((len(ids), width), IGNORE, dtype=torch.long)}
        for row, (tokens, mask) in enumerate(zip(ids, masks)):
            n = len(tokens)
            out["input_ids"][row, :n] = torch.from_numpy(tokens)
            out["attention_mask"][row, :n] = 1
            out["labels"][row, :n] = torch.from_numpy(np.where(mask, tokens, IGNORE))
        return out


def read_pairs(data_dir: Path, split: str) -> Pairs:
    path = Path(data_dir) / f"pairs-{split}.parquet"
    if not path.exists():
        return Pairs([], [], [], [])
    table = pq.read_table(path, columns=COLUMNS)
    columns = [table.column(name).to_pylist() for name in COLUMNS]
    kinds = (np.int64, bool, np.int64, bool)
    return Pairs(*([np.asarray(row, dtype=kind) for row in column] for column, kind in zip(columns, kinds)))


def reply_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each row's reply tokens under `model`, shape (rows,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["labels"][:, 1:]  # token t+1 is predicted at position t
    logps = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logps.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (labels != IGNORE)).sum(-1)
