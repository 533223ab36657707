"""GPU tests (nccl, bf16, compile, FSDP2): run by `nox -s gpu` on a CUDA machine.

Their CPU twins: tests/runner/test_parallelize.py (bf16 compute, compile, activation
checkpointing, 2 gloo processes) and tests/runner/test_training.py (the runner end to end),
and test_gpu_check_smoke_on_cpu below for the benchmark script.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from tests.conftest import REPO

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
@needs_two
def test_nccl_two_gpus_match_one(tmp_path):
    run_recipe("gpt2-debug", ["trainer.micro_batch_size=4"], run_dir=tmp_path / "one")
    run_recipe("gpt2-debug", ["trainer.micro_batch_size=2"], run_dir=tmp_path / "two", nproc=2)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-4)


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
