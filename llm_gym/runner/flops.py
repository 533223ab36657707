"""Model FLOPs utilisation: achieved FLOPs per second over the hardware's peak.

FLOPs per token are the model's own count (GPT-2: 6N + 12·L·H·Q·T, PaLM appendix B).
Peaks are dense bf16 tensor-core rates from the vendors' data sheets; on a CPU the
peak is measured at the start of the run with a large fp32 matmul.
"""

from __future__ import annotations

import time

import torch

# Dense (no sparsity) bf16 peak FLOP/s per device, matched against torch's device name.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L4": 121e12,
    "L40S": 362e12,
    "V100": 125e12,
    "4090": 165e12,
}


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """``(peak FLOP/s or None, where it comes from)``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAK_FLOPS.items():
            if key in name:
                return peak, f"{name} data sheet (bf16 dense)"
        return None, f"no peak rate known for {name!r}"
    if device.type == "cpu":
        return measured_cpu_peak(), "fp32 matmul measured on this CPU"
    return None, f"no peak rate known for device type {device.type!r}"


def measured_cpu_peak(size: int = 1536, repeats: int = 4) -> float:
    """FLOP/s of the fastest of a few fp32 matmuls on this CPU, measured now.

    Not cached: a shared machine's speed changes with its load, and a peak measured
    while busy would report an MFU above 100% later.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up the kernels
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
