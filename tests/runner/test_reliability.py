"""Nothing lost, nobody surprised: divergence, Ctrl-C, one writer, room to write, a dying
worker. Faults come from a test plugin (tests/fixtures/fault_site), installed per test."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.checkpoint import latest_checkpoint
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.safety import RunDirLock
from tests.conftest import FAULT_SITE, REPO

pytestmark = pytest.mark.usefixtures("use_demo_cache")


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, faults):
    run_dir = tmp_path / "run"
    args = ["loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[6]",
            "trainer.checkpoint_every=2", "trainer.eval_every=null"]
    with pytest.raises(UserError, match=r"step 6: the loss or gradient norm is nan") as caught:
        run_recipe("gpt2-debug", args, run_dir=run_dir)
    assert "step_00000004" in str(caught.value)  # names the intact checkpoint
    assert latest_checkpoint(run_dir).name == "step_00000004"
    assert not (run_dir / "checkpoints" / "step_00000006").exists()


def test_nonfinite_steps_can_be_skipped(tmp_path, faults, capfd):
    args = ["loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[3,5]",
            "trainer.on_nonfinite=skip", "trainer.eval_every=null"]
    result = run_recipe("gpt2-debug", args, run_dir=tmp_path / "run")
    assert result["step"] == 8
    err = capfd.readouterr().err
    assert "step 3: gradient norm nan; step skipped" in err
    assert "step 5: gradient norm nan; step skipped" in err
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 9))
    # metrics.jsonl stores a non-finite value as null: a faulted step reads back as None,
    # and every other one must be a real, finite number (None == None would pass).
    bad = {r["step"] for r in records if not _finite(r["loss"]) or not _finite(r["grad_norm"])}
    assert bad == {3, 5}
    assert result["loss"] == records[-1]["loss"] and _finite(result["loss"])  # finite again


def _finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir):
        with pytest.raises(UserError, match=f"{run_dir} is in use by another run \\(pid"):
            run_recipe("gpt2-debug", [], run_dir=run_dir)
    assert not (run_dir / "metrics.jsonl").exists()  # nothing was written by the refused run
    assert run_recipe("gpt2-debug", ["trainer.max_steps=2"], run_dir=run_dir)["step"] == 2


def test_unwritable_run_directory_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="a-file/run is not writable"):
        run_recipe("gpt2-debug", [], run_dir=blocker / "run")


def test_too_little_free_space_is_reported_before_training(tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))
    with pytest.raises(UserError, match=r"GiB free, but one checkpoint needs about"):
        run_recipe("gpt2-debug", [], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _file_size_limit(limit: int):  # noqa: ANN202
    """For a subprocess: writes past ``limit`` bytes fail (EFBIG), as on a full disk."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, don't kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_checkpoint_that_cannot_be_written_stops_cleanly_and_keeps_the_last(tmp_path):
    """The disk fills mid-run: the save at step 6 fails. The run stops with exit 1 and a
    message saying what failed and what to do (no traceback), the partial checkpoint is
    gone, step 4's is intact, and once there is room the run resumes and finishes."""
    run_dir = tmp_path / "run"
    args = ["trainer.max_steps=8", "trainer.checkpoint_every=2", "trainer.eval_every=null"]
    run_recipe("gpt2-debug", [*args[1:], "trainer.max_steps=4"], run_dir=run_dir)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints" / "step_00000004")
              .iterdir()}
    # The model and optimizer state take ~700 kB; every other file the run writes is small.
    result = subprocess.run(
        [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--run-dir",
         str(run_dir), "--resume", *args],
        capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(200_000))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "step 6: writing the checkpoint failed" in result.stderr
    assert f"{run_dir}/checkpoints/step_00000004, is intact" in result.stderr
    assert "free under" in result.stderr and "--resume" in result.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_00000002", "step_00000004"]
    assert before == {p.name: p.read_bytes() for p in (run_dir / "checkpoints" /
                                                        "step_00000004").iterdir()}
    assert run_recipe("gpt2-debug", args, run_dir=run_dir, resume=True)["step"] == 8


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_exactly(tmp_path):
    # Ctrl-C comes after the 5th step is logged, so the stop lands long before step 60;
    # each step more would be paid three times (interrupted, resumed, whole) for nothing.
    steps = 60
    args = [f"trainer.max_steps={steps}", "trainer.eval_every=null", "trainer.log_every=1",
            "model.config.n_embd=96", "model.config.n_layer=3"]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--run-dir",
         str(run_dir), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists() or len(_losses(run_dir)) < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    stopped = latest_checkpoint(run_dir)
    assert stopped is not None and int(stopped.name.split("_")[1]) < steps
    run_recipe("gpt2-debug", args, run_dir=run_dir, resume=True)
    run_recipe("gpt2-debug", args, run_dir=tmp_path / "whole")
    whole = _losses(tmp_path / "whole")
    assert len(whole) == steps and all(_finite(x) for x in whole)  # nulls would compare equal
    assert _losses(run_dir) == whole


def test_a_dying_worker_takes_the_job_down_naming_its_rank(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{FAULT_SITE}{os.pathsep}{REPO}"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--nproc", "2",
         "--run-dir", str(tmp_path / "run"), "trainer.micro_batch_size=2",
         "loss.type_hint=FaultyCrossEntropy", "loss.config.kill_rank=1",
         "loss.config.kill_at_call=3"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "rank 1 (exit code -9): killed by signal 9 (SIGKILL)" in result.stderr
    if "rank 0" in result.stderr:  # a peer the agent stopped (when it got that far) comes after
        assert result.stderr.index("rank 1") < result.stderr.index("rank 0")  # cause first
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 240  # it did not hang
