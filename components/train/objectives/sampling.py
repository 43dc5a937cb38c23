"""Which rows a batch takes: every row once per epoch, in a seeded order per epoch, by global sample index.

Sample g of the run is row `order(g // n)[g % n]`: a pure function of (seed, g), so a batch depends on
nothing but its step, and a resumed run reads exactly the rows the uninterrupted one would have. The
data-parallel batch of (step, micro) is the `micro_batch * world` samples after all earlier ones; each rank
takes its own consecutive `micro_batch` of them.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


class EpochSampler:
    def __init__(self, rows: int, seed: int, micro_batch: int, grad_accum: int, world: int):
        if rows <= 0:
            raise ValueError("no rows to sample from")
        self.rows, self.seed = rows, seed
        self.micro_batch, self.grad_accum, self.world = micro_batch, grad_accum, world

    @lru_cache(maxsize=2)  # the current epoch's order, and the next one's at an epoch boundary
    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

    def take(self, first: int, count: int) -> np.ndarray:
        """The rows of global samples first, first + 1, ..., first + count - 1."""
        samples = np.arange(first, first + count)
        return np.array([self.order(int(s) // self.rows)[int(s) % self.rows] for s in samples], dtype=np.int64)

    def batch(self, step: int, micro: int, rank: int) -> np.ndarray:
        """This rank's rows of micro-batch `micro` of optimizer step `step`."""
        first = ((step * self.grad_accum + micro) * self.world + rank) * self.micro_batch
        return self.take(first, self.micro_batch)

    def step(self, step: int) -> np.ndarray:
        """Every row of optimizer step `step`, all micro-batches and ranks."""
        per_step = self.micro_batch * self.grad_accum * self.world
        return self.take(step * per_step, per_step)


def dealt(count: int, rank: int, world: int) -> range:
    """Validation: batch indices 0..count-1 dealt round-robin, as many to every rank (a ZeRO-3 forward is a
    collective: one extra batch on one rank would hang the others)."""
    return range(rank, count - count % world, world)
