"""Training batches from token shards: non-overlapping windows, each visited once per epoch, whose position is
just the step number.

The shards of a split are memory-mapped and read as one long stream (documents already end with the EOT, so
a window may span documents, as in GPT-2/nanochat pretraining). The stream is cut into windows of
`seq_len + 1` ids that share only their edge id (the last target of one is the first input of the next);
`EpochSampler` deals them in a seeded order per epoch by global sample index. A batch is a pure function of
(seed, step, micro, rank): there is no loader state to save, and a resumed run reads exactly the windows the
uninterrupted run would have read. The samples of a step depend on the global batch size only, not on how it is
split into ranks and micro-batches, so a run resumed on another world size (same global batch) trains on the
same windows at the same steps.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from components.tokenize import open_shard, read_manifest
from components.train.objectives.sampling import EpochSampler


def split_shards(token_dir: Path, split: str) -> list[Path]:
    """The split's shards in manifest order (`train`, `val` or `anneal`); [] when the split is empty."""
    token_dir = Path(token_dir)
    return [token_dir / s["name"] for s in read_manifest(token_dir)["shards"] if s["split"] == split]


class TokenStream:
    """Several shards read as one array of ids, without copying them into memory."""

    def __init__(self, shards: list[Path]):
        if not shards:
            raise ValueError("no token shards given")
        self.parts = [open_shard(path)[0] for path in shards]
        self.ends = np.cumsum([len(part) for part in self.parts])  # end offset of each shard in the stream
        self.size = int(self.ends[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """ids[start:start + length] of the stream, as int64, stitched across shard edges."""
        out, end = [], start + length
        shard = int(np.searchsorted(self.ends, start, side="right"))
        while start < end:
            shard_start = int(self.ends[shard - 1]) if shard else 0
            stop = min(end, int(self.ends[shard]))
            out.append(np.asarray(self.parts[shard][start - shard_start:stop - shard_start], dtype=np.int64))
            start, shard = stop, shard + 1
        return np.concatenate(out)


class TokenWindows:
    """`batch(step, micro)`: this rank's `micro_batch` windows of `seq_len + 1` ids (inputs and the next-token
    targets) of micro-batch `micro` of optimizer step `step`."""

    def __init__(self, shards: list[Path], seq_len: int, micro_batch: int, seed: int, rank: int = 0,
                 world: int = 1, grad_accum: int = 1):
        self.stream = TokenStream(shards)
        self.seq_len, self.window = seq_len, seq_len + 1
        self.count = (self.stream.size - 1) // seq_len  # windows that fit; the stream's tail (< seq_len) is unused
        if self.count < 1:
            raise ValueError(f"{self.stream.size} tokens cannot fill one window of {self.window}")
        self.rank = rank
        self.sampler = EpochSampler(self.count, seed, micro_batch, grad_accum, world)

    def starts(self, step: int, micro: int) -> np.ndarray:
        return self.sampler.batch(step, micro, self.rank) * self.seq_len

    def batch(self, step: int, micro: int) -> torch.Tensor:
        rows = [self.stream.read(int(start), self.window) for start in self.starts(step, micro)]
        return torch.from_numpy(np.stack(rows))


def val_batches(shards: list[Path], seq_len: int, micro_batch: int, max_batches: int, rank: int = 0,
                world: int = 1) -> Iterator[torch.Tensor]:
    """The validation split in order, as consecutive windows (each overlapping the next by the one target
    id), `micro_batch` per batch; the first `max_batches` batches, dealt round-robin to the ranks. Always
    the same batches, so validation losses are comparable across runs and checkpoints. Every rank gets as
    many batches as the others (a ZeRO-3 forward is a collective: an extra one on one rank would hang)."""
    stream = TokenStream(shards)
    count = min(max_batches, (stream.size - 1) // seq_len // micro_batch)
    for index in range(count - count % world):
        if index % world != rank:
            continue
        first = index * micro_batch
        rows = [stream.read((first + k) * seq_len, seq_len + 1) for k in range(micro_batch)]
        yield torch.from_numpy(np.stack(rows))
