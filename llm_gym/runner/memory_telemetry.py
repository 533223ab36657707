"""Peak memory per logging interval, as ``mem/*`` keys of the train records.

On CUDA: ``mem/cuda_peak_allocated_gib`` (tensors) and ``mem/cuda_peak_reserved_gib``
(what the caching allocator holds: what ``nvidia-smi`` and an out-of-memory see), the
allocator's peaks since the previous record, reset after each read. On a CPU:
``mem/rss_mib``, the process's resident set now, and ``mem/peak_rss_mib``, its peak since
the previous record where Linux lets a process reset that peak (``/proc/self/clear_refs``),
else since the process started (``getrusage``'s ``ru_maxrss``). Several ranks report the
largest value over ranks: the rank that runs out first is the one to see.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import torch

GIB, MIB = 1 << 30, 1 << 20
_STATM = Path("/proc/self/statm")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class MemoryTelemetry:
    """Reads and resets the peaks; ``record()`` at each logging step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._interval_peaks = device.type == "cpu" and _reset_rss_peak()

    def record(self) -> dict[str, float]:
        """This rank's ``mem/*`` values since the previous call (or the start)."""
        if self.device.type == "cuda":
            values = {
                "mem/cuda_peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
                "mem/cuda_peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB,
            }
            torch.cuda.reset_peak_memory_stats(self.device)
            return values
        values = {}
        current = current_rss_bytes()
        if current is not None:
            values["mem/rss_mib"] = current / MIB
        peak = _interval_rss_peak() if self._interval_peaks else None
        if peak is None:
            peak = lifetime_peak_rss_bytes()
        else:
            self._interval_peaks = _reset_rss_peak()
        # The peak cannot be below what is resident now (the kernel updates its high-water
        # mark lazily, at page-table changes).
        values["mem/peak_rss_mib"] = max(peak, current or 0) / MIB
        return values


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux; None elsewhere)."""
    try:
        resident_pages = int(_STATM.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def lifetime_peak_rss_bytes() -> int:
    """Peak resident set since the process started (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _interval_rss_peak() -> int | None:
    """``VmHWM``: the resident high-water mark since the last reset."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux >= 4.0); False where refused."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def max_over_ranks(values: dict[str, float], world_size: int,
                   device: torch.device) -> dict[str, float]:
    """Each value's maximum over the ranks (every rank calls this, with the same keys)."""
    if world_size == 1 or not values:
        return values
    packed = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.MAX)
    return dict(zip(values, packed.tolist(), strict=True))
