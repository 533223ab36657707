"""GPU tests (nccl, bf16, compile, FSDP2): run by `nox -s gpu` on a CUDA machine.

Their CPU twins: tests/runner/test_parallelize.py (bf16 compute, compile, activation
checkpointing, 2 gloo processes), tests/runner/test_training.py (the runner end to end),
tests/runner/test_nonfinite.py (no per-step host reads, skipping on the device), and
test_gpu_check_smoke_on_cpu below for the benchmark script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from tests.conftest import REPO
from tests.host_reads import reads_in_run

pytestmark = pytest.mark.usefixtures("use_demo_cache")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")


def _losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("compile", [False, True])
def test_bf16_training_on_cuda(tmp_path, compile):
    run_recipe("gpt2-debug", ["trainer.param_dtype=bf16", f"trainer.compile={compile}",
                              "trainer.max_steps=20"], run_dir=tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.gpu
@needs_cuda
def test_no_host_device_sync_per_step_on_cuda(tmp_path):
    """8 steps read back no more than 4 do: neither ``.item()``-style reads nor any other
    synchronizing CUDA call (torch's sync debug mode) grows with the steps."""

    def syncs(steps: int) -> tuple[int, int]:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reads = reads_in_run(tmp_path / str(steps), steps, ["trainer.param_dtype=bf16"])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return reads, sum("synchronizing" in str(w.message) for w in caught)

    assert syncs(8) == syncs(4)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.usefixtures("faults")
def test_nonfinite_steps_are_skipped_on_the_device(tmp_path, capfd):
    args = ["loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[3,5]",
            "trainer.on_nonfinite=skip", "trainer.eval_every=null", "trainer.log_every=4",
            "trainer.param_dtype=bf16"]
    result = run_recipe("gpt2-debug", args, run_dir=tmp_path / "run")
    err = capfd.readouterr().err
    assert result["step"] == 8 and result["loss"] == result["loss"]  # finite at the end
    assert "step 3: gradient norm nan; step skipped" in err
    assert "step 5: gradient norm nan; step skipped" in err


@pytest.mark.gpu
@needs_two
def test_nccl_two_gpus_match_one(tmp_path):
    run_recipe("gpt2-debug", ["trainer.micro_batch_size=4"], run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", ["trainer.micro_batch_size=2"], run_dir=tmp_path / "two", nproc=2)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-4)


@pytest.mark.usefixtures("faults")
def test_the_gpu_configuration_runs_on_cpu(tmp_path, capfd):
    """CPU twin of the GPU tests above: bf16 compute (so FSDP2 wraps even one rank),
    torch.compile per block and the fused optimizer skipping a non-finite step on the
    device, together through the runner; 8 steps read no more values back than 4."""
    import torch._dynamo

    over = ["trainer.param_dtype=bf16", "trainer.compile=true", "trainer.on_nonfinite=skip",
            "loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[2]"]
    torch._dynamo.reset()
    try:
        reads = [reads_in_run(tmp_path / str(steps), steps, over) for steps in (4, 8)]
    finally:
        torch._dynamo.reset()
    assert reads[0] == reads[1]
    assert capfd.readouterr().err.count("step 2: gradient norm nan; step skipped") == 2
    losses = _losses(tmp_path / "8")
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()  # logged once


def test_gpu_check_smoke_on_cpu(tmp_path):
    """The GPU check's own code path, on a CPU with a tiny model."""
    out = tmp_path / "check.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gpu_check.py"), "--cpu-smoke", "--steps", "6",
         "--micro-batch", "4", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(out.read_text())["cpu smoke"]
    assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
    assert "tokens/s" in result.stdout
    memory = json.loads(out.read_text())["memory"]
    assert memory["predicted_gib"] > 0 and memory["measured_gib"] is None  # no GPU here
