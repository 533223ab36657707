"""A recipe whose train_dataset is a Mixture of two packs, end to end through recipe run:
stopping and resuming changes no loss, and 2 processes train like 1."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from llm_gym.data.pack import pack_jsonl
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym_components.tokenizers import ByteLevelTokenizer

RECIPE = """\
recipe: {{description: two packs mixed 3 to 1}}
trainer: {{max_steps: 6, seq_len: 16, micro_batch_size: 4, log_every: 1, seed: 0,
          loggers: []}}
model:
  type_hint: GPT2
  config: {{vocab_size: 257, n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2}}
tokenizer: ByteLevel
train_dataset:
  type_hint: Mixture
  config:
    weights: [3, 1]
    sources:
      - {{type_hint: PackedTokens, config: {{path: "{a}"}}}}
      - {{type_hint: PackedTokens, config: {{path: "{b}"}}}}
loss: CrossEntropy
optimizer: {{type_hint: AdamW, config: {{lr: 1.0e-3}}}}
"""


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory) -> Path:
    """Two small byte-level packs (2000 and 600 blocks of 17 tokens) and the recipe."""
    root = tmp_path_factory.mktemp("mix-run")
    prefixes = []
    for name, words, docs in (("a", "alpha beta gamma delta", 400), ("b", "one two three", 200)):
        corpus = root / f"{name}.jsonl"
        with corpus.open("w") as f:
            for i in range(docs):
                f.write(json.dumps({"text": f"{words} {i} " * 6}) + "\n")
        pack_jsonl(corpus, ByteLevelTokenizer(), root / name)
        prefixes.append(root / name)
    recipes = root / "recipes" / "mix-tiny"
    recipes.mkdir(parents=True)
    (recipes / "v1.yaml").write_text(textwrap.dedent(RECIPE.format(a=prefixes[0],
                                                                    b=prefixes[1])))
    return root / "recipes"


def _run(recipe_dir: Path, run_dir: Path, *overrides: str, **kwargs) -> dict:
    return run_recipe("mix-tiny", overrides, run_dir=run_dir, recipe_dirs=[recipe_dir],
                      allow_drift=True, **kwargs)


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_stop_and_resume_gives_the_same_losses_bitwise(recipe_dir, tmp_path) -> None:
    _run(recipe_dir, tmp_path / "whole", "trainer.max_steps=6")
    _run(recipe_dir, tmp_path / "split", "trainer.max_steps=3")
    resumed = _run(recipe_dir, tmp_path / "split", "trainer.max_steps=6", resume=True)
    assert resumed["step"] == 6
    whole = _losses(tmp_path / "whole")
    assert len(whole) == 6 and _losses(tmp_path / "split") == whole


@pytest.mark.dist
def test_two_processes_train_like_one(recipe_dir, tmp_path) -> None:
    _run(recipe_dir, tmp_path / "one", "trainer.max_steps=3")
    _run(recipe_dir, tmp_path / "two", "trainer.max_steps=3", "trainer.micro_batch_size=2",
         nproc=2)
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
