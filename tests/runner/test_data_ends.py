"""The trainer and a mixture: tokens per source in metrics.jsonl, and a run whose data
runs out (``on_exhausted: stop``) ends cleanly at the last full step."""

from __future__ import annotations

import torch

from llm_gym.runner.checkpoint import latest_checkpoint
from llm_gym.runner.metrics import read_metrics
from tests.runner.test_mixture_run import _run, recipe_dir  # noqa: F401 (a fixture)

# 16-token blocks, 3 micro-batches of 16 per step: 48 samples a step. Source b (1321
# samples) gives three quarters of them, so it runs out during step 37, after two of its
# three micro-batches.
STOPPING = ("trainer.max_steps=100", "trainer.micro_batch_size=16",
            "trainer.grad_accumulation=3", "trainer.log_every=5",
            "train_dataset.config.weights=[1,3]", "train_dataset.config.on_exhausted=stop")


def test_tokens_per_source_are_recorded_cumulatively(recipe_dir, tmp_path):  # noqa: F811
    _run(recipe_dir, tmp_path / "run", "trainer.max_steps=8", "trainer.log_every=2")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    by_source = [r["tokens_by_source"] for r in records]
    assert all(len(counts) == 2 for counts in by_source)
    # Every token trained on came from one source, and the counts only grow.
    assert [sum(c.values()) for c in by_source] == [r["tokens"] for r in records]
    for label in by_source[0]:
        series = [c[label] for c in by_source]
        assert series == sorted(series) and series[0] > 0
    a, b = by_source[-1].values()
    assert abs(a / (a + b) - 0.75) < 0.1  # weights [3, 1], over only 8 x 4 samples


def test_a_mixture_that_runs_out_ends_the_run_at_the_last_full_step(recipe_dir, tmp_path,  # noqa: F811
                                                                    capsys):
    run_dir = tmp_path / "run"
    result = _run(recipe_dir, run_dir, *STOPPING)
    step = result["step"]
    assert 10 < step < 100
    out = capsys.readouterr().out
    assert f"the training data ran out after step {step} of 100" in out
    assert "ran out after its 1321 samples of one epoch" in out
    assert "continue: nothing more to train on" in out and "--resume" not in out
    # The last full step is logged, as a run's last step always is.
    logged = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert logged[-1] == step and step % 5  # log_every=5 would not have logged it
    # The partial step was dropped: the saved data position is that of the last full step.
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint.name.endswith(f"{step:08d}")
    state = torch.load(checkpoint / "rank0.pt", weights_only=True)["extra"]["train_data"]
    assert state["cursor"] == 48 * step
    assert state["positions"][1] <= 1321
    # Resuming trains nothing more and says why, without failing.
    again = _run(recipe_dir, run_dir, *STOPPING, resume=True)
    assert again["step"] == step
    assert "the training data ran out" in capsys.readouterr().out
