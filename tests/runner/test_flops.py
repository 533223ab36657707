"""MFU that cannot lie: the exact GPU part from torch's device name (or none), and a CPU
peak that a busy start-up cannot leave too low."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from llm_gym.runner.flops import MfuMeter, gpu_part, gpu_spec, measured_cpu_peak, peak_flops

# torch.cuda.get_device_name() of each part -> (part, dense 16-bit TFLOP/s of its data
# sheet, memory GiB). Written out here, not read from the table under test.
DEVICE_NAMES = {
    "NVIDIA H100 80GB HBM3": ("H100-SXM", 989, 79.1),
    "NVIDIA H100 PCIe": ("H100-PCIe", 756, 79.1),
    "NVIDIA H100 NVL": ("H100-NVL", 835, 93.1),
    "NVIDIA H200": ("H200", 989, 139.8),
    "NVIDIA H200 NVL": ("H200-NVL", 835, 139.8),
    "NVIDIA A100-SXM4-40GB": ("A100-40GB", 312, 39.4),
    "NVIDIA A100-SXM4-80GB": ("A100-80GB", 312, 79.2),
    "NVIDIA A100 80GB PCIe": ("A100-80GB-PCIe", 312, 79.2),
    "NVIDIA A100-PCIE-40GB": ("A100-40GB-PCIe", 312, 39.4),
    "NVIDIA L4": ("L4", 121, 22.0),
    "NVIDIA L40": ("L40", 181, 44.4),
    "NVIDIA L40S": ("L40S", 362, 44.4),
    "NVIDIA A10G": ("A10G", 125, 22.1),
    "NVIDIA A10": ("A10", 125, 22.1),
    "Tesla V100-SXM2-16GB": ("V100-SXM2-16GB", 125, 15.8),
    "Tesla V100-SXM2-32GB": ("V100-SXM2-32GB", 125, 31.7),
    "Tesla V100-PCIE-16GB": ("V100-PCIe-16GB", 112, 15.8),
    "NVIDIA GeForce RTX 4090": ("RTX-4090", 165, 23.6),
}
# Near misses of known names included: a substring match would find L4, A100 or H100.
UNKNOWN_NAMES = ["NVIDIA GH200 480GB", "Tesla T4", "NVIDIA B200", "NVIDIA GeForce RTX 3090",
                 "NVIDIA L40G", "NVIDIA A1000", "NVIDIA H100 SXM5 94GB", "AMD Instinct MI300X",
                 ""]


@pytest.mark.parametrize("device_name", DEVICE_NAMES)
def test_each_part_is_found_by_its_exact_device_name(device_name, monkeypatch):
    part, tflops, gib = DEVICE_NAMES[device_name]
    assert gpu_spec(device_name) == (part, tflops * 1e12, int(gib * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    peak, source = peak_flops(torch.device("cuda", 0))
    assert peak == tflops * 1e12
    assert device_name in source and part in source


def test_v100_says_it_has_no_bf16_tensor_cores(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    _, source = peak_flops(torch.device("cuda", 0))
    assert "fp16 dense" in source and "no bf16 tensor cores" in source
    assert gpu_part("NVIDIA L40S").peak_dtype == "bf16"


@pytest.mark.parametrize("device_name", UNKNOWN_NAMES)
def test_an_unknown_gpu_gets_no_mfu_rather_than_a_neighbours(device_name, monkeypatch):
    assert gpu_part(device_name) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    peak, source = peak_flops(torch.device("cuda", 0))
    assert peak is None and "no MFU" in source
    assert MfuMeter(torch.device("cuda", 0)).mfu(10_000.0, 1e9) is None


def test_a_step_faster_than_the_peak_raises_it_and_is_reported_once():
    remeasured = []

    def remeasure() -> float:
        remeasured.append(1)
        return 2.0e9  # quieter now than at start-up, but still below what the step did

    meter = MfuMeter(torch.device("cpu"), world_size=2, peak=1e9, remeasure=remeasure)
    assert meter.mfu(1000.0, 1e6) == pytest.approx(0.5)  # 1e9 over 2 ranks: half the peak
    assert meter.raises == [] and meter.take_note() is None
    assert meter.mfu(6000.0, 1e6) == 1.0  # 3e9 per rank beats 1e9: the peak was wrong
    assert meter.peak == 3e9 and len(remeasured) == 1
    note = meter.take_note()
    assert "achieved 0.003 TFLOP/s per device, above the assumed peak of 0.001" in note
    assert "raised to 0.003 TFLOP/s" in note
    assert meter.take_note() is None  # reported once
    assert meter.mfu(3000.0, 1e6) == pytest.approx(0.5)  # later steps use the raised peak
    assert [(r.old_peak, r.new_peak) for r in meter.raises] == [(1e9, 3e9)]


def test_a_remeasured_peak_above_the_step_is_kept():
    meter = MfuMeter(torch.device("cpu"), peak=1e9, remeasure=lambda: 4e9)
    assert meter.mfu(2000.0, 1e6) == pytest.approx(0.5)  # 2e9 against the re-measured 4e9
    assert meter.peak == 4e9


def test_a_data_sheet_peak_that_is_beaten_is_raised_too():
    meter = MfuMeter(torch.device("cuda"), peak=1e12, source="sheet")  # no re-measuring
    assert meter.remeasure is None
    assert meter.mfu(2e6, 1e6) == 1.0 and meter.peak == 2e12


def _busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_mfu_stays_at_most_100_percent_when_the_peak_was_measured_under_load():
    """The peak is measured while busy processes hold every core (as on a shared machine
    at start-up); then the same matmul runs on a quiet machine as the "training step"."""
    size = 512
    busy = _busy_processes(2 * (os.cpu_count() or 1))
    try:
        time.sleep(0.3)  # let them take the cores
        meter = MfuMeter(torch.device("cpu"), peak=measured_cpu_peak(size, repeats=3),
                         remeasure=lambda: measured_cpu_peak(size, repeats=3))
        loaded_peak = meter.peak
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    a, b = torch.randn(size, size), torch.randn(size, size)
    flops_per_token = 2 * size**3  # one "token" is one matmul
    best = 0.0
    for _ in range(20):
        start = time.perf_counter()
        torch.mm(a, b)
        tokens_per_s = 1 / (time.perf_counter() - start)
        best = max(best, tokens_per_s * flops_per_token)
        mfu = meter.mfu(tokens_per_s, flops_per_token)
        assert mfu is not None and 0 < mfu <= 1.0
    assert meter.peak >= best  # no step ever beat the peak it was divided by
    print(f"\npeak measured under load {loaded_peak / 1e9:.1f} GFLOP/s, quiet step "
          f"{best / 1e9:.1f} GFLOP/s, peak now {meter.peak / 1e9:.1f} ({len(meter.raises)} raises)")
