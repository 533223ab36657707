"""llama-tiny trains: its loss falls within a few dozen steps (its model, smaller data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_gym.recipes.loading import load_recipe
from llm_gym.runner.entry import run_recipe

QUICK = ["trainer.max_steps=12", "trainer.seq_len=64", "trainer.micro_batch_size=8",
         "trainer.eval_every=null", "trainer.log_every=1", "trainer.checkpoint_every=1000",
         "trainer.loggers=[]", "scheduler.config.warmup_steps=3"]


def quick_recipe(tmp_path: Path) -> Path:
    """llama-tiny on byte-level tokens and the small demo corpus that gpt2-debug uses
    (prepared once per session) instead of its own BPE tokenizer trained on 8 MB."""
    text = Path(load_recipe("llama-tiny").ref.path).read_text()
    for old, new in [("type_hint: DemoBPE\n  config: {vocab_size: 4096, corpus_mb: 8}",
                      "type_hint: ByteLevel"),
                     ("${tokenizer.config.vocab_size}", "257"),
                     ('"${tokenizer.config.corpus_mb}"', "0.5"),
                     ("${tokenizer.config.corpus_mb}", "0.5")]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "llama-quick.yaml"
    path.write_text(text[:text.index("pins:")])
    return path


def test_llama_tiny_loss_falls(tmp_path: Path, use_demo_cache: Path) -> None:
    run_dir = tmp_path / "run"
    run_recipe(str(quick_recipe(tmp_path)), QUICK, run_dir=run_dir, allow_drift=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 1.0, f"loss fell from {first:.3f} to {last:.3f} only"


def test_the_llama_recipes_are_locked() -> None:
    # Without allow_drift, an unpinned or drifted recipe is refused.
    for name in ("llama-tiny", "llama-124m"):
        loaded = load_recipe(name)
        assert loaded.drift == [] and loaded.recipe.model.type_hint.name == "Llama"
    big = load_recipe("llama-124m").recipe.trainer
    assert (big.param_dtype, big.compile) == ("bf16", True)


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_llama_resumes_bitwise(tmp_path: Path, use_demo_cache: Path) -> None:
    recipe = str(quick_recipe(tmp_path))
    short = ["trainer.seq_len=32", "trainer.micro_batch_size=4", "trainer.eval_every=null",
             "trainer.log_every=1", "trainer.checkpoint_every=2", "trainer.loggers=[]",
             "scheduler.config.warmup_steps=1", "scheduler.config.decay_steps=4"]
    run_recipe(recipe, [*short, "trainer.max_steps=4"], run_dir=tmp_path / "straight",
               allow_drift=True)
    run_recipe(recipe, [*short, "trainer.max_steps=2"], run_dir=tmp_path / "halves",
               allow_drift=True)
    run_recipe(recipe, [*short, "trainer.max_steps=4"], run_dir=tmp_path / "halves",
               resume=True, allow_drift=True)
    straight, halves = _losses(tmp_path / "straight"), _losses(tmp_path / "halves")
    assert len(straight) == 4 and halves == straight  # float for float


@pytest.mark.dist
def test_llama_trains_alike_on_one_and_two_fsdp_processes(tmp_path: Path,
                                                          use_demo_cache: Path) -> None:
    recipe = str(quick_recipe(tmp_path))
    short = ["trainer.seq_len=32", "trainer.eval_every=null", "trainer.log_every=1",
             "trainer.loggers=[]", "trainer.max_steps=3", "scheduler.config.warmup_steps=1"]
    # micro_batch_size is per rank: 4 on one process, 2 on each of two, the same batch.
    run_recipe(recipe, [*short, "trainer.micro_batch_size=4"], run_dir=tmp_path / "one",
               allow_drift=True)
    run_recipe(recipe, [*short, "trainer.micro_batch_size=2"], run_dir=tmp_path / "two",
               nproc=2, allow_drift=True)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    # Only the order of the gradient sums differs (FSDP2's reduce-scatter over 2 ranks).
    assert len(one) == 3 and two == pytest.approx(one, rel=1e-5)
