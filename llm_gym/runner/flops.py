"""Model FLOPs utilisation: achieved FLOPs per second over the hardware's peak.

FLOPs per token are the model's own count (GPT-2: 6N + 12·L·H·Q·T, PaLM appendix B).
Peaks are dense bf16 tensor-core rates from the vendors' data sheets; on a CPU the
peak is measured once with a large fp32 matmul and cached.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

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


def measured_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of the best of a few fp32 matmuls, cached per machine and thread count."""
    cache = Path(os.environ.get("LLM_GYM_CACHE", Path.home() / ".cache" / "llm_gym"))
    key = f"cpu_peak_{torch.get_num_threads()}threads_{torch.__version__}"
    path = cache / "peaks.json"
    try:
        known = json.loads(path.read_text())
        if key in known:
            return float(known[key])
    except (OSError, ValueError):
        known = {}
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up the kernels
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    peak = 2 * size**3 / best
    try:
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**known, key: peak}))
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return peak


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
