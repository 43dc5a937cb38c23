"""Model FLOPs utilisation: FLOPs the model needs per token (attention included) × tokens/s ÷ the device's peak.

The peak is the datasheet's dense bf16 tensor-core number for the GPUs in the planner's table (H100, H200,
A100); on a CPU there is no datasheet number to trust, so it is measured: the best of a few large matmuls in
this process's dtype and thread count. MFU on CPU therefore reads as "share of what this process's matmuls
reach", which is what tells a slow loop from a slow machine.
"""
from __future__ import annotations

import time

import torch

from components.planner.plan import GPUS


def peak_flops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """(FLOP/s of one device, where the number comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for gpu, spec in GPUS.items():
            if gpu in name:
                return spec["peak_tflops"] * 1e12, f"datasheet bf16 dense, {gpu.upper()}"
        raise ValueError(f"no peak FLOP/s known for {name!r}: set pretrain.peak_flops in params.yaml")
    return measured_matmul_flops(torch.bfloat16 if bf16 else torch.float32), "measured matmul on this CPU"


def measured_matmul_flops(dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """The best rate of `size`² matmuls over about `seconds`: what this process's threads can reach. The
    best, not the mean, so a moment of contention from another process does not lower the peak (it would
    inflate the MFU); a machine busy for the whole second still does, so read CPU MFU as approximate."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm the kernels and caches
    best, stop = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        began = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - began))
    return best


def mfu(train_flops_per_token: float, tokens_per_s: float, world: int, peak: float) -> float:
    """Tokens/s of the whole job × FLOPs per token, over the peak of all its devices."""
    return train_flops_per_token * tokens_per_s / (world * peak)
