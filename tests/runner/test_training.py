"""The runner end to end on the gpt2-debug recipe: metrics, exact resume, accumulation,
and 1 vs 2 processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("use_demo_cache")


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def _run(run_dir: Path, *overrides: str, nproc: int = 1) -> dict:
    return run_recipe("gpt2-debug", overrides, nproc=nproc, run_dir=run_dir)


def test_run_writes_metrics_resolved_recipe_and_checkpoint(tmp_path):
    result = _run(tmp_path / "run")
    assert result["step"] == 8
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(train[0])
    assert [r["step"] for r in evals] == [4, 8]
    assert all("loss" not in r and math.isfinite(r["eval_perplexity"]) for r in evals)
    assert train[-1]["loss"] < train[0]["loss"]
    resolved = (tmp_path / "run" / "recipe.resolved.yaml").read_text()
    assert "model/GPT2" in resolved and "max_steps: 8" in resolved
    assert (tmp_path / "run" / "checkpoints" / "step_00000008" / "COMPLETE").exists()
    assert not (tmp_path / "run" / ".lock").exists()  # a finished run leaves no lock


def test_stop_and_resume_gives_the_same_losses_bitwise(tmp_path):
    _run(tmp_path / "whole", "trainer.max_steps=8")
    _run(tmp_path / "split", "trainer.max_steps=4")
    resumed = run_recipe(
        "gpt2-debug", ["trainer.max_steps=8"], run_dir=tmp_path / "split", resume=True
    )
    assert resumed["step"] == 8
    assert _losses(tmp_path / "split") == _losses(tmp_path / "whole")


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    _run(tmp_path / "big", "trainer.micro_batch_size=8", "trainer.max_steps=4")
    _run(
        tmp_path / "acc",
        "trainer.micro_batch_size=2",
        "trainer.grad_accumulation=4",
        "trainer.max_steps=4",
    )
    assert _losses(tmp_path / "acc") == pytest.approx(_losses(tmp_path / "big"), abs=1e-5)


def test_two_processes_match_one(tmp_path):
    """FSDP2 over 2 gloo ranks, each with half the batch, trains like 1 rank."""
    _run(tmp_path / "one", "trainer.micro_batch_size=4", "trainer.max_steps=4")
    _run(tmp_path / "two", "trainer.micro_batch_size=2", "trainer.max_steps=4", nproc=2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(two) == 4
    assert two == pytest.approx(one, abs=1e-5)
    marker = json.loads(
        (tmp_path / "two" / "checkpoints" / "step_00000004" / "COMPLETE").read_text()
    )
    assert marker["world_size"] == 2


def test_resume_with_two_processes_is_exact(tmp_path):
    _run(tmp_path / "whole", "trainer.micro_batch_size=2", "trainer.max_steps=6", nproc=2)
    _run(tmp_path / "split", "trainer.micro_batch_size=2", "trainer.max_steps=3", nproc=2)
    run_recipe("gpt2-debug", ["trainer.micro_batch_size=2", "trainer.max_steps=6"], nproc=2,
               run_dir=tmp_path / "split", resume=True)
    assert _losses(tmp_path / "split") == _losses(tmp_path / "whole")


def test_sigkill_then_resume_continues_exactly(tmp_path):
    """Killed at a random moment after the first checkpoint: --resume ends where an
    uninterrupted run ends, loss for loss, and metrics.jsonl holds each step once."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    args = ["trainer.max_steps=150", "trainer.checkpoint_every=20", "trainer.eval_every=null",
            "trainer.log_every=1", "model.config.n_embd=96", "model.config.n_layer=3"]
    _run(tmp_path / "whole", *args)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug", "--run-dir",
         str(run_dir), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ})
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "step_00000020" / "COMPLETE").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before a save"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))  # somewhere in later steps or a later save
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from llm_gym.runner.checkpoint import latest_checkpoint

    assert latest_checkpoint(run_dir).name < "step_00000150"  # it really stopped early
    result = run_recipe("gpt2-debug", args, run_dir=run_dir, resume=True)
    assert result["step"] == 150
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 151))
    assert _losses(run_dir) == _losses(tmp_path / "whole")


def test_reading_ahead_changes_no_loss_and_resumes_exactly(tmp_path):
    _run(tmp_path / "plain", "trainer.max_steps=6", "trainer.prefetch=0")
    _run(tmp_path / "ahead", "trainer.max_steps=3", "trainer.prefetch=2")
    run_recipe("gpt2-debug", ["trainer.max_steps=6", "trainer.prefetch=2"],
               run_dir=tmp_path / "ahead", resume=True)
    assert _losses(tmp_path / "ahead") == _losses(tmp_path / "plain")
    records = read_metrics(tmp_path / "ahead" / "metrics.jsonl")
    assert all(0 <= r["data_wait_pct"] < 100 for r in records if "loss" in r)


def test_compiled_training_steps_never_recompile(tmp_path, monkeypatch):
    """torch.compile per block: after the first step, training (with accumulation, so the
    no-sync micro-batches too) must reuse the compiled code; any recompile raises here.
    (Evaluation and generation compile once more each: no grad, and new shapes.)"""
    import torch
    import torch._dynamo

    compiled = []  # what the runner compiles: each block's forward, and the loss
    real_compile = torch.compile

    def spy(target, *args, **kwargs):  # noqa: ANN001, ANN202
        compiled.append(getattr(target, "__qualname__", type(target).__name__))
        return real_compile(target, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    # torch's own patch, not monkeypatch: pytest 9's monkeypatch finds no instance
    # attribute on a torch config module and undoes by delattr, which hides the setting
    # from every later test in the process ("error_on_recompile does not exist").
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            result = _run(tmp_path / "run", "trainer.compile=true", "trainer.max_steps=4",
                          "trainer.grad_accumulation=2", "trainer.eval_every=null",
                          "trainer.sample_prompt=null")
    finally:
        torch._dynamo.reset()
    assert result["step"] == 4 and math.isfinite(result["loss"])
    assert compiled.count("Block.forward") == 2 and "CrossEntropyLoss" in compiled


def test_the_logged_lr_is_the_one_the_step_trained_with(tmp_path):
    """gpt2-debug warms up over 2 steps: step 1 trains at 1/3 of the peak, step 2 at 2/3.
    The optimizer's own rate at each step() is what metrics.jsonl must say."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    used: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"]))
    try:
        _run(tmp_path / "run", "trainer.max_steps=4", "trainer.eval_every=null")
    finally:
        handle.remove()
    logged = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "lr" in r]
    assert used == logged
    assert logged[0] == pytest.approx(1e-3 / 3) and logged[1] == pytest.approx(2e-3 / 3)


def test_a_run_shorter_than_eval_every_evaluates_at_its_end(tmp_path):
    _run(tmp_path / "short", "trainer.max_steps=3", "trainer.eval_every=4")
    _run(tmp_path / "odd", "trainer.max_steps=6", "trainer.eval_every=4")
    for name, steps in (("short", [3]), ("odd", [4, 6])):
        records = read_metrics(tmp_path / name / "metrics.jsonl")
        assert [r["step"] for r in records if "eval_loss" in r] == steps


def test_a_stop_during_evaluation_waits_for_one_eval_batch_not_all(tmp_path, monkeypatch):
    """SIGTERM arrives while step 2's evaluation (50 batches) runs: the run stops after
    the batch in progress, saves step 2 and exits as interrupted."""
    import os
    import signal

    from llm_gym.runner.safety import Interrupted
    from llm_gym.runner.stop_agreement import StopAgreement

    calls = []
    real = StopAgreement.agreed

    def agreed(self, requested):  # noqa: ANN001, ANN202
        calls.append(requested)
        if len(calls) == 4:  # steps 1, 2, then before each eval batch: during the 2nd
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, requested)

    monkeypatch.setattr(StopAgreement, "agreed", agreed)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted, match="interrupted at step 2; checkpoint saved"):
        _run(run_dir, "trainer.max_steps=8", "trainer.eval_every=2", "trainer.eval_batches=50")
    assert len(calls) == 5  # one more check, before the next eval batch, and it stopped
    assert not [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in r]
    assert (run_dir / "checkpoints" / "step_00000002" / "COMPLETE").exists()


def test_a_stop_before_the_first_step_says_there_is_nothing_to_resume(tmp_path, monkeypatch):
    from llm_gym.runner.checkpoint import latest_checkpoint
    from llm_gym.runner.safety import Interrupted
    from llm_gym.runner.stop_agreement import StopAgreement

    monkeypatch.setattr(StopAgreement, "agreed", lambda self, requested: True)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        _run(run_dir, "trainer.max_steps=8")
    message = str(caught.value)
    assert message.startswith("interrupted at step 0; nothing trained yet, so no checkpoint")
    assert message.endswith(f"start again with the same command and --run-dir {run_dir}")
    assert "--resume" not in message and latest_checkpoint(run_dir) is None


def test_workers_train_the_recipe_the_launcher_resolved_without_reading_it_again(tmp_path):
    """The job a launcher pickles for its workers carries the resolved recipe; a worker
    validates that instead of finding and loading the files again (which may have changed
    or gone since the launcher checked them)."""
    import pickle

    from llm_gym.recipes.loading import load_recipe
    from llm_gym.runner.run_job import RunJob
    from llm_gym.runner.trainer import train_worker

    loaded = load_recipe("gpt2-debug", ["trainer.max_steps=2", "trainer.eval_every=null"])
    job = RunJob("no-such-recipe", (), tmp_path / "run", recipe=loaded.portable())
    result = train_worker(pickle.loads(pickle.dumps(job)))  # as a forked worker gets it
    assert result["step"] == 2
    assert "max_steps: 2" in (tmp_path / "run" / "recipe.resolved.yaml").read_text()
