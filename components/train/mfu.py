"""Model FLOPs utilisation: FLOPs the model needs per token (attention included) × tokens/s ÷ the device's peak.

The peak is the datasheet's dense bf16 tensor-core number of the exact device name CUDA reports
(`DEVICE_PEAK_TFLOPS`): a substring match would give an H100 PCIe (756) or NVL (835) the SXM's 989 and
understate its MFU by up to a quarter; a name not in the table stops the run and asks for
`pretrain.peak_flops`. On a CPU there is no datasheet number to trust, so it is measured: the best of a few large matmuls in
this process's dtype and thread count. MFU on CPU therefore reads as "share of what this process's matmuls
reach", which is what tells a slow loop from a slow machine.
"""
from __future__ import annotations

import time

import torch

# torch.cuda.get_device_name → dense bf16 tensor-core TFLOP/s (NVIDIA's datasheets list twice these "with
# sparsity"). SXM and PCIe/NVL parts of one chip differ in SMs and clocks, hence in peak.
DEVICE_PEAK_TFLOPS: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 989.0,  # SXM5
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.0,  # SXM
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA GH200 480GB": 989.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA B200": 2250.0,
}


def peak_flops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """(FLOP/s of one device, where the number comes from)."""
    if device.type == "cuda":
        return datasheet_peak(torch.cuda.get_device_name(device))
    return measured_matmul_flops(torch.bfloat16 if bf16 else torch.float32), "measured matmul on this CPU"


def datasheet_peak(name: str) -> tuple[float, str]:
    if name not in DEVICE_PEAK_TFLOPS:
        raise ValueError(f"no peak FLOP/s known for the device {name!r} (known: {', '.join(DEVICE_PEAK_TFLOPS)}): "
                         "set pretrain.peak_flops in params.yaml to its dense bf16 FLOP/s from the datasheet")
    return DEVICE_PEAK_TFLOPS[name] * 1e12, f"datasheet bf16 dense, {name}"


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
