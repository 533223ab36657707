"""The runner end to end on the gpt2-debug recipe: metrics, exact resume, accumulation,
and 1 vs 2 processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics


@pytest.fixture(scope="module", autouse=True)
def demo_cache(tmp_path_factory: pytest.TempPathFactory):
    """One small demo corpus for the whole module (it is prepared on first use)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LLM_GYM_DEMO_CACHE", str(tmp_path_factory.mktemp("demo-cache")))
    yield
    mp.undo()


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
