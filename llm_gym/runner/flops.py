"""Model FLOPs utilisation: achieved FLOPs per second over the hardware's peak.

FLOPs per token are the model's own count (GPT-2: 6N + 12·L·H·Q·T, PaLM appendix B).
Peaks are dense bf16 tensor-core rates from the vendors' data sheets; on a CPU the
peak is measured at the start of the run with a large fp32 matmul.
"""

from __future__ import annotations

import time

import torch

from llm_gym.errors import UserError

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

# Memory per device in GiB as torch reports it (``total_memory``), for ``recipe plan``.
# Keys are PEAK_FLOPS's (the larger variant where a GPU comes in two), plus the smaller
# variants by name; ``gpu_spec`` finds their peak through PEAK_FLOPS.
GPU_MEMORY_GIB = {
    "H200": 139.8,
    "H100": 79.1,
    "A100": 79.2,
    "A100-40GB": 39.4,
    "A10G": 22.1,
    "L4": 22.0,
    "L40S": 44.4,
    "V100": 31.7,
    "V100-16GB": 15.8,
    "4090": 23.6,
}


def gpu_spec(name: str) -> tuple[str, float, int]:
    """``(canonical name, bf16 dense peak FLOP/s, memory in bytes)`` of a GPU named like
    a key of GPU_MEMORY_GIB, in any case (``h100``, ``a100-40gb``)."""
    key = next((k for k in GPU_MEMORY_GIB if k.lower() == name.lower()), None)
    # The longest PEAK_FLOPS key inside the name: "A100-40GB" -> "A100", "L40S" -> "L40S".
    peak_key = max((k for k in PEAK_FLOPS if key and k in key), key=len, default=None)
    if key is None or peak_key is None:
        raise UserError(f"unknown GPU {name!r}; known: {', '.join(GPU_MEMORY_GIB)}")
    return key, PEAK_FLOPS[peak_key], int(GPU_MEMORY_GIB[key] * 2**30)


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


def measured_cpu_peak(size: int = 1024, repeats: int = 3) -> float:
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
