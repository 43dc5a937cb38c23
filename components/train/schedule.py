"""The learning-rate schedule, a pure function of the step: resuming needs no scheduler state.

Two shapes, both with a linear warmup to `peak`:
  wsd     warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024): constant at `peak`, then decayed
          to `min_ratio * peak` over the last `decay_fraction` of the steps, linearly or by 1 - sqrt. The
          stable phase can be extended without knowing the final length, and the decay is where the
          high-quality (anneal) data pays off most.
  cosine  half a cosine from `peak` after warmup down to `min_ratio * peak` at the last step.
Steps are 0-based: step 0 is the first optimizer step, `total - 1` the last.
"""
from __future__ import annotations

import math

KINDS = ("wsd", "cosine")
DECAY_SHAPES = ("linear", "sqrt")


def decay_start(total: int, warmup: int, decay_fraction: float = 0.2) -> int:
    """The first step of the decay phase (never inside the warmup)."""
    return max(warmup, total - round(decay_fraction * total))


def lr_at(step: int, total: int, peak: float, warmup: int, kind: str = "wsd", decay_fraction: float = 0.2,
          min_ratio: float = 0.1, decay_shape: str = "linear") -> float:
    if kind not in KINDS:
        raise ValueError(f"unknown schedule {kind!r}; allowed: {KINDS}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"unknown decay shape {decay_shape!r}; allowed: {DECAY_SHAPES}")
    if step < warmup:
        return peak * (step + 1) / warmup  # reaches peak on the last warmup step, never 0 (a wasted step)
    floor = min_ratio * peak
    if kind == "cosine":
        progress = _progress(step, warmup, total)
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    start = decay_start(total, warmup, decay_fraction)
    if step < start:
        return peak
    progress = _progress(step, start, total)
    if decay_shape == "sqrt":
        progress = math.sqrt(progress)  # "1 - sqrt": drops fast, then flattens (Hägele et al. 2024)
    return floor + (peak - floor) * (1 - progress)


def _progress(step: int, start: int, total: int) -> float:
    """0 before the phase, 1 on the last step: the last step is trained at exactly the final value."""
    span = total - start
    return min(1.0, (step - start + 1) / span) if span > 0 else 1.0


def in_decay(step: int, total: int, warmup: int, decay_fraction: float = 0.2) -> bool:
    """Whether `step` is in the final `decay_fraction` of the run: when the data switches to the anneal split.
    The same window for both shapes (for cosine it is the tail where the LR is already low)."""
    return step >= decay_start(total, warmup, decay_fraction)
