"""SIGKILL at random moments, mid-checkpoint included, for 1 and 2 processes and for
checkpoints written in the background (trainer.async_checkpoint): --resume always ends
where an uninterrupted run ends, loss for loss (nox -s dist)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_gym.runner.checkpoint import latest_checkpoint
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

# A checkpoint every step, so that a random kill often lands inside a save. The kill
# comes within 1.5 s of the first save; 30 steps leave room past that on a fast machine.
MAX_STEPS = 30
ARGS = [f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every=1", "trainer.keep_last=2",
        "trainer.eval_every=null", "trainer.log_every=1", "model.config.n_embd=64"]
# Kills per case. CI runs 1 for each of the three (its whole test command has a 10-minute
# budget; each CI run draws new moments); LLM_GYM_KILL_TRIALS=N tries more (`nox -s dist`
# runs 6).
TRIALS = int(os.environ.get("LLM_GYM_KILL_TRIALS", "1"))


pytestmark = pytest.mark.usefixtures("use_demo_cache")


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


_REFERENCES: dict[int, list[float]] = {}


def _reference_losses(nproc: int, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """The uninterrupted run's losses on ``nproc`` processes, synchronous saves (run once
    for the cases that share it)."""
    if nproc not in _REFERENCES:
        run_dir = tmp_path_factory.mktemp(f"whole{nproc}")
        run_recipe("gpt2-debug", [*ARGS, f"trainer.micro_batch_size={4 // nproc}"],
                   run_dir=run_dir, nproc=nproc)
        _REFERENCES[nproc] = _losses(run_dir)
    return _REFERENCES[nproc]


@pytest.mark.dist
@pytest.mark.parametrize(("nproc", "saves"), [(1, "sync"), (2, "sync"), (2, "async")])
def test_kill_anywhere_then_resume(tmp_path, tmp_path_factory, nproc, saves):
    args = [*ARGS, f"trainer.micro_batch_size={4 // nproc}",
            f"trainer.async_checkpoint={saves == 'async'}"]
    # The reference saves synchronously: a background save must not change a loss.
    expected = _reference_losses(nproc, tmp_path_factory)
    # Real numbers, one per step: lists of nulls (non-finite losses) would compare equal.
    assert len(expected) == MAX_STEPS and all(math.isfinite(x) for x in expected)
    rng = random.Random(1234 + nproc + (saves == "async"))
    outcomes = []
    for trial in range(TRIALS):
        run_dir = tmp_path / f"killed{trial}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--nproc",
             str(nproc), "--run-dir", str(run_dir), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while latest_checkpoint(run_dir) is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker at once
        # A run that finished before the kill would make the resume below trivial.
        assert alive and proc.wait() == -signal.SIGKILL, f"trial {trial}: not killed mid-run"
        killed_at = latest_checkpoint(run_dir)
        assert int(killed_at.name.split("_")[1]) < MAX_STEPS, f"trial {trial}: the run had finished"
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir()
                     if p.name.endswith(".tmp")]
        run_recipe("gpt2-debug", args, run_dir=run_dir, nproc=nproc, resume=True)
        assert _losses(run_dir) == expected, f"trial {trial}, killed at {killed_at}"
        outcomes.append(f"{killed_at.name}{' +partial save' if leftovers else ''}")
    print(f"\n{nproc} process(es), {saves} saves: killed after {outcomes}; every resume "
          "matched")


@pytest.mark.dist
def test_ctrl_c_under_the_launcher_saves_exits_130_and_resumes_exactly(tmp_path):
    """Ctrl-C reaches the whole foreground group: the launcher and both workers."""
    # Ctrl-C after the 5th logged step: the stop lands long before step 60.
    args = [*ARGS, "trainer.checkpoint_every=null", "trainer.max_steps=60",
            "trainer.micro_batch_size=2"]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--nproc", "2",
         "--run-dir", str(run_dir), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while not (run_dir / "metrics.jsonl").exists() or len(_losses(run_dir)) < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    saved = latest_checkpoint(run_dir)
    assert saved is not None and int(saved.name.split("_")[1]) < 60
    run_recipe("gpt2-debug", args, run_dir=run_dir, nproc=2, resume=True)
    run_recipe("gpt2-debug", args, run_dir=tmp_path / "whole", nproc=2)
    assert _losses(run_dir) == _losses(tmp_path / "whole")
