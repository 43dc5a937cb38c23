"""Intervals, digests and the score row every measure reports."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Score:
    """One number of the report card, with what it takes to read it."""

    model: str
    measure: str  # acc, acc_norm, bpb, perplexity, win_rate, lc_win_rate, contamination_p, ngram_overlap
    task: str  # the task, text set or judged instruction set
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    interval: str = ""  # how the 95% interval was made: wilson, bootstrap, normal (±1.96 SE), ...
    chance: float | None = None  # what a model that guesses scores
    n: int = 0  # items, documents or instructions behind the number
    formulation: str = ""  # cloze / letter for multiple choice
    shots: int | None = None
    subset: str = "all"  # MMLU-Redux: all / ok
    prompt_digest: str = ""  # the prompt's templates and shot count
    items_digest: str = ""  # the scored items' content
    note: str = ""

    def row(self) -> dict:
        return asdict(self)


def wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion: stays inside [0, 1] and is sane near 0, 1 and small n."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # float noise at p = 0 or 1


def bootstrap(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (seeded)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def digest(obj) -> str:
    """sha256 (16 hex) of the canonical JSON of `obj`."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
