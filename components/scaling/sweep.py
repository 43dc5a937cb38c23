"""The isoFLOP sweep's plan: for each compute budget C and model size, the tokens D with 6·N·D = C, as
whole optimizer steps of the pretraining stage; and the model size nearest a recommended N.

N is the weight count of every matmul (`flops_per_token`'s `matmul_params`: the blocks and the LM head, not
the input embedding, a lookup): the N whose 6·N is the dense training FLOPs per token, so 6·N·D is the
compute. Sizes come from the same depth dial as the pretraining model (width = depth × aspect_ratio).
"""
from __future__ import annotations

import math

from components.model import ModelParams, flops_per_token, llama_config


def matmul_params(model: ModelParams, vocab_size: int) -> int:
    return flops_per_token(llama_config(model, vocab_size, 0, 1, 2), model.seq_len)["matmul_params"]


def plan_sweep(budgets: list[float], depths: list[int], model: ModelParams, vocab_size: int,
               tokens_per_step: int, min_steps: int = 10) -> list[dict]:
    """One row per (budget, depth): params N, steps, tokens D (whole steps, so 6·N·D is within a step of C),
    `flops` (6·N·D actually spent). Sizes that would get fewer than `min_steps` steps are left out: a run
    that short measures its warmup, not its size."""
    rows = []
    for budget in sorted(budgets):
        for depth in sorted(depths):
            sized = model.model_copy(update={"depth": depth})
            n = matmul_params(sized, vocab_size)
            steps = round(budget / (6 * n * tokens_per_step))
            if steps >= min_steps:
                tokens = steps * tokens_per_step
                rows.append({"budget": budget, "depth": depth, "width": sized.width, "params": n,
                             "steps": steps, "tokens": tokens, "flops": 6 * n * tokens})
    return rows


def nearest_depth(target_params: float, model: ModelParams, vocab_size: int, max_depth: int = 128) -> int:
    """The depth whose N is nearest `target_params` in log scale (scaling laws are straight lines there)."""
    def distance(depth: int) -> float:
        return abs(math.log(matmul_params(model.model_copy(update={"depth": depth}), vocab_size) / target_params))

    return min(range(1, max_depth + 1), key=distance)
