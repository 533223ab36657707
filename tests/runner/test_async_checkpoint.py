"""trainer.async_checkpoint: checkpoints written by a thread while training goes on, with
the guarantees of a synchronous save (the kill tests are in test_kill_anywhere.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import llm_gym.runner.async_checkpoint as async_checkpoint
from llm_gym.errors import ReportedError
from llm_gym.runner.checkpoint import CheckpointWriteError, latest_checkpoint
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.safety import Interrupted
from llm_gym.runner.stop_agreement import StopAgreement

pytestmark = pytest.mark.usefixtures("use_demo_cache")

ARGS = ["trainer.max_steps=8", "trainer.checkpoint_every=2", "trainer.keep_last=10",
        "trainer.eval_every=null", "trainer.log_every=1"]
ASYNC = "trainer.async_checkpoint=true"


def _run(run_dir: Path, *overrides: str, resume: bool = False) -> dict:
    return run_recipe("gpt2-debug", [*ARGS, *overrides], run_dir=run_dir, resume=resume)


def _records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in _records(run_dir)]


@pytest.fixture
def slow_writes(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Every background write starts 0.3 s late (training has moved on by then) and is
    counted, with the most writes ever in flight at once."""
    seen = {"writes": 0, "active": 0, "most_active": 0}
    lock = threading.Lock()
    real = async_checkpoint.write_checkpoint

    def slow(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with lock:
            seen["writes"] += 1
            seen["active"] += 1
            seen["most_active"] = max(seen["most_active"], seen["active"])
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(async_checkpoint, "write_checkpoint", slow)
    return seen


def test_background_checkpoints_hold_the_step_they_were_taken_at(tmp_path, slow_writes):
    """Written while later steps train, each checkpoint still holds its own step: resuming
    from the middle one gives the uninterrupted run's losses, bitwise."""
    _run(tmp_path / "sync")
    _run(tmp_path / "async", ASYNC)
    assert _losses(tmp_path / "async") == _losses(tmp_path / "sync")
    assert slow_writes["writes"] == 4 and slow_writes["most_active"] == 1
    done = sorted(p.name for p in (tmp_path / "async" / "checkpoints").iterdir())
    assert done == [f"step_{s:08d}" for s in (2, 4, 6, 8)]  # all complete, no .tmp left
    # Resume from step 4, written 0.3 s after it was taken, while steps 5.. trained.
    for later in ("step_00000006", "step_00000008"):
        os.rename(tmp_path / "async" / "checkpoints" / later, tmp_path / f"aside-{later}")
    (tmp_path / "async" / "metrics.jsonl").unlink()
    _run(tmp_path / "async", ASYNC, resume=True)
    assert _losses(tmp_path / "async") == _losses(tmp_path / "sync")[4:]


def test_the_time_training_waited_for_checkpoints_is_recorded(tmp_path, slow_writes):
    """A save waits for the one before it: with writes slower than two steps, training
    waits, and metrics.jsonl says for how long, at the step after the save."""
    _run(tmp_path / "run", ASYNC, "trainer.checkpoint_every=1", "trainer.max_steps=4")
    waits = {r["step"]: r["checkpoint_wait_s"] for r in _records(tmp_path / "run")}
    assert waits[1] == 0.0  # nothing saved yet
    assert all(waits[s] > 0.1 for s in (3, 4)), waits  # each waited for the previous write
    assert slow_writes["most_active"] == 1


def test_a_failed_background_save_stops_the_run_and_keeps_the_last_complete(
        tmp_path, monkeypatch):
    real = async_checkpoint.write_checkpoint

    def fail_at_step_8(run_dir, step, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if step == 8:
            raise CheckpointWriteError("OSError: [Errno 28] No space left on device")
        return real(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(async_checkpoint, "write_checkpoint", fail_at_step_8)
    run_dir = tmp_path / "run"
    with pytest.raises(ReportedError) as caught:
        _run(run_dir, ASYNC, "trainer.checkpoint_every=4", "trainer.max_steps=16")
    message = str(caught.value)
    assert message.startswith("step 8: writing the checkpoint failed (OSError: [Errno 28]")
    assert "step_00000004, is intact" in message and "--resume" in message
    assert latest_checkpoint(run_dir).name == "step_00000004"
    # Noticed at a step boundary the ranks agree on, not at the next save (step 12).
    assert max(r["step"] for r in _records(run_dir)) <= 10


def test_a_stop_waits_for_the_save_in_flight_then_saves_its_own_step(
        tmp_path, monkeypatch, slow_writes):
    calls = []
    real = StopAgreement.agreed

    def agreed(self, requested):  # noqa: ANN001, ANN202
        calls.append(requested)
        if len(calls) == 3:  # before step 3: step 2's save is still being written
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, requested)

    monkeypatch.setattr(StopAgreement, "agreed", agreed)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted, match=r"interrupted at step 3; checkpoint saved to \S+"
                                          r"step_00000003"):
        _run(run_dir, ASYNC)
    done = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert done == ["step_00000002", "step_00000003"]  # both complete, nothing partial
    assert slow_writes["writes"] == 2 and slow_writes["most_active"] == 1
    _run(run_dir, ASYNC, resume=True)
    _run(tmp_path / "whole")
    assert _losses(run_dir) == _losses(tmp_path / "whole")
