"""Model FLOPs utilisation: achieved FLOPs per second over the hardware's peak.

FLOPs per token are the model's own count (GPT-2: 6N + 12·L·H·Q·T, PaLM appendix B).

On a GPU the peak is the dense tensor-core rate of the vendor's data sheet for the exact
part, looked up by ``gpu_part`` from ``torch.cuda.get_device_name()``: one lookup for the
runner, ``recipe plan --gpu`` and ``tools/gpu_check.py``. A name the table does not know
gives no MFU at all rather than a neighbour's peak ("L40S" is not "L4", "H100 PCIe" is
not "H100 SXM").

On a CPU there is no data sheet: the peak is the best of repeated fp32 matmuls measured
at start-up. A busy moment can only make that too low, so ``MfuMeter`` treats any step
that beats the peak as proof the peak was wrong: it measures again, raises the peak to at
least what the step achieved, and records the raise. No MFU above 100% leaves the meter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm_gym.errors import UserError


@dataclass(frozen=True)
class GpuPart:
    """One GPU model as its data sheet describes it."""

    name: str  # canonical, as ``recipe plan`` prints it
    peak_flops: float  # dense (no sparsity) 16-bit tensor-core FLOP/s
    peak_dtype: str  # the dtype of that rate: "bf16", or "fp16" where bf16 has no tensor cores
    memory_gib: float  # about what torch reports as ``total_memory``
    aliases: tuple[str, ...]  # torch device names and --gpu spellings, matched normalised
    note: str = ""


# Volta's tensor cores take fp16 only: a bf16 run on a V100 gets nowhere near this rate.
_VOLTA = "no bf16 tensor cores"

# Rates are the data sheets' dense figures (the "with sparsity" ones are twice these).
# Memory: the data sheet's capacity in GiB less what the driver reserves, as torch's
# ``total_memory`` reports it; ``recipe plan`` keeps 10% spare on top.
GPU_PARTS: tuple[GpuPart, ...] = (
    # NVIDIA H200 data sheet: BF16 tensor 1,979 TFLOPS with sparsity (SXM), 141 GB HBM3e.
    GpuPart("H200", 989e12, "bf16", 139.8, ("H200", "H200 SXM", "H200 141GB HBM3e")),
    # H200 NVL (PCIe card): BF16 1,671 TFLOPS with sparsity, 141 GB.
    GpuPart("H200-NVL", 835e12, "bf16", 139.8, ("H200 NVL",)),
    # NVIDIA H100 data sheet: SXM 1,979 / PCIe 1,513 / NVL 1,671 BF16 TFLOPS with
    # sparsity; 80 GB HBM3 (SXM), 80 GB HBM2e (PCIe), 94 GB HBM3 (NVL).
    GpuPart("H100-SXM", 989e12, "bf16", 79.1,
            ("H100", "H100 SXM", "H100 SXM5", "H100 80GB HBM3", "H100 SXM5 80GB")),
    GpuPart("H100-PCIe", 756e12, "bf16", 79.1, ("H100 PCIe", "H100 80GB PCIe")),
    GpuPart("H100-NVL", 835e12, "bf16", 93.1, ("H100 NVL",)),
    # NVIDIA A100 data sheet: BF16 tensor 312 TFLOPS dense, SXM and PCIe alike.
    GpuPart("A100-80GB", 312e12, "bf16", 79.2,
            ("A100", "A100 80GB", "A100-SXM4-80GB", "A100 SXM4 80GB", "A100 80GB SXM")),
    GpuPart("A100-80GB-PCIe", 312e12, "bf16", 79.2, ("A100 80GB PCIe", "A100-PCIE-80GB")),
    GpuPart("A100-40GB", 312e12, "bf16", 39.4,
            ("A100 40GB", "A100-SXM4-40GB", "A100 SXM4 40GB", "A100-SXM-40GB")),
    GpuPart("A100-40GB-PCIe", 312e12, "bf16", 39.4, ("A100-PCIE-40GB", "A100 40GB PCIe")),
    # NVIDIA L4 data sheet: BF16 242 TFLOPS with sparsity, 24 GB GDDR6.
    GpuPart("L4", 121e12, "bf16", 22.0, ("L4",)),
    # NVIDIA L40 data sheet: BF16 181.05 / 362.1 TFLOPS (dense / sparse), 48 GB GDDR6.
    GpuPart("L40", 181e12, "bf16", 44.4, ("L40",)),
    # NVIDIA L40S data sheet: BF16 362.05 / 733 TFLOPS (dense / sparse), 48 GB GDDR6.
    GpuPart("L40S", 362e12, "bf16", 44.4, ("L40S",)),
    # NVIDIA A10 data sheet: BF16 125 / 250 TFLOPS (dense / sparse), 24 GB. NVIDIA
    # publishes no separate sheet for AWS's A10G; this is the A10's figure.
    GpuPart("A10G", 125e12, "bf16", 22.1, ("A10G",), "the A10 data sheet's rate"),
    GpuPart("A10", 125e12, "bf16", 22.1, ("A10",)),
    # NVIDIA V100 data sheet: 125 (SXM2) / 112 (PCIe) tensor TFLOPS, fp16 only: Volta
    # has no bf16 tensor cores, so a bf16 run on it is far below this.
    GpuPart("V100-SXM2-32GB", 125e12, "fp16", 31.7, ("V100", "V100-SXM2-32GB"), _VOLTA),
    GpuPart("V100-SXM2-16GB", 125e12, "fp16", 15.8, ("V100-16GB", "V100-SXM2-16GB"), _VOLTA),
    GpuPart("V100-PCIe-32GB", 112e12, "fp16", 31.7, ("V100-PCIE-32GB",), _VOLTA),
    GpuPart("V100-PCIe-16GB", 112e12, "fp16", 15.8, ("V100-PCIE-16GB",), _VOLTA),
    # NVIDIA Ada whitepaper (RTX 4090): BF16 tensor with FP32 accumulate 165.2 TFLOPS
    # dense, 24 GB GDDR6X.
    GpuPart("RTX-4090", 165e12, "bf16", 23.6, ("4090", "RTX 4090", "GeForce RTX 4090")),
)

_VENDOR_WORDS = {"nvidia", "tesla", "geforce"}


def _normalised(name: str) -> str:
    """``"NVIDIA A100-SXM4-40GB"`` -> ``"a100-sxm4-40gb"``: case, separators and the vendor
    words torch puts in front do not matter; everything else must match exactly."""
    words = [w for w in re.split(r"[^0-9a-z]+", name.lower()) if w]
    while words and words[0] in _VENDOR_WORDS:
        words.pop(0)
    return "-".join(words)


_BY_ALIAS: dict[str, GpuPart] = {}
for _part in GPU_PARTS:
    for _alias in (_part.name, *_part.aliases):
        _key = _normalised(_alias)
        if _BY_ALIAS.get(_key, _part) is not _part:
            raise AssertionError(f"GPU alias {_alias!r} names two parts")
        _BY_ALIAS[_key] = _part


def gpu_part(name: str) -> GpuPart | None:
    """The table's part for a torch device name or a ``--gpu`` spelling; None if unknown
    (never the nearest match)."""
    return _BY_ALIAS.get(_normalised(name))


def gpu_spec(name: str) -> tuple[str, float, int]:
    """``(canonical name, dense 16-bit peak FLOP/s, memory in bytes)`` of the GPU called
    ``name`` (``h100``, ``a100-40gb``, ``"NVIDIA L40S"``); a UserError if unknown."""
    part = gpu_part(name)
    if part is None:
        known = ", ".join(p.name.lower() for p in GPU_PARTS)
        raise UserError(f"unknown GPU {name!r} (--gpu); known: {known}")
    return part.name, part.peak_flops, int(part.memory_gib * 2**30)


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """``(peak FLOP/s or None, where it comes from)`` for one device."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        part = gpu_part(name)
        if part is None:
            return None, f"no peak rate known for {name!r}: no MFU"
        note = f"; {part.note}" if part.note else ""
        return part.peak_flops, f"{name}: {part.name} data sheet ({part.peak_dtype} dense{note})"
    if device.type == "cpu":
        return measured_cpu_peak(), "fp32 matmul measured on this CPU"
    return None, f"no peak rate known for device type {device.type!r}: no MFU"


def measured_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of the fastest of ``repeats`` fp32 matmuls on this CPU, measured now.

    The fastest, because other load on the machine only ever adds time. Not cached: a
    shared machine's speed changes with its load; ``MfuMeter`` raises a peak that a
    training step beats.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm up the kernels
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class PeakRaise:
    """A step achieved more than the assumed peak, so the peak was raised."""

    achieved: float  # FLOP/s per device, the step's
    old_peak: float
    new_peak: float

    def message(self) -> str:
        return (f"MFU: a step achieved {self.achieved / 1e12:.3g} TFLOP/s per device, above "
                f"the assumed peak of {self.old_peak / 1e12:.3g}; the peak was wrong and is "
                f"raised to {self.new_peak / 1e12:.3g} TFLOP/s (MFU stays <= 100%)")


class MfuMeter:
    """MFU of one run, never above 1.0.

    ``peak`` comes from ``peak_flops`` (or is given); ``remeasure`` (the CPU's matmul
    probe by default on a CPU, none elsewhere) is called when a step beats the peak, and
    the new peak is the larger of what it measures and what the step achieved. Each
    raise is kept in ``raises``; ``take_note()`` returns the message of raises not yet
    reported, for the console.
    """

    def __init__(
        self,
        device: torch.device,
        world_size: int = 1,
        *,
        peak: float | None = None,
        source: str | None = None,
        remeasure: Callable[[], float] | None = None,
    ) -> None:
        if peak is None:
            peak, found = peak_flops(device)
            source = source or found
        self.peak, self.source = peak, source or "given"
        self.world_size = world_size
        self.remeasure = remeasure if remeasure is not None else (
            measured_cpu_peak if device.type == "cpu" else None)
        self.raises: list[PeakRaise] = []
        self._reported = 0

    def mfu(self, tokens_per_s: float | None, flops_per_token: float | None) -> float | None:
        """Achieved model FLOPs per device over the peak; None without a known peak or
        rate. A rate above the peak raises the peak first (see the class)."""
        if not (tokens_per_s and flops_per_token and self.peak):
            return None
        achieved = tokens_per_s * flops_per_token / self.world_size
        if achieved > self.peak:
            measured = self.remeasure() if self.remeasure is not None else 0.0
            raised = PeakRaise(achieved, self.peak, max(achieved, measured))
            self.raises.append(raised)
            self.peak = raised.new_peak
        return min(1.0, achieved / self.peak)

    def take_note(self) -> str | None:
        """The raises since the last call, as one line; None if there were none."""
        new, self._reported = self.raises[self._reported:], len(self.raises)
        return "; ".join(r.message() for r in new) or None
