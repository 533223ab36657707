"""``recipe.name`` and ``recipe.version`` name a recipe file outside a recipe directory:
its label and its default run directory (docs/recipes.md tells users to set them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.recipes.loading import load_recipe
from tests.conftest import REPO

DEBUG = REPO / "recipes" / "gpt2-debug" / "v1.yaml"


def _with_meta(path: Path, meta: str) -> Path:
    text = DEBUG.read_text()
    old = "recipe:\n  description:"
    assert old in text
    path.write_text(text.replace(old, f"recipe:\n{meta}  description:", 1))
    return path


def test_a_file_outside_a_recipe_dir_takes_its_name_and_version(tmp_path):
    path = _with_meta(tmp_path / "experiment.yaml", "  name: my-gpt2\n  version: 3\n")
    assert load_recipe(str(path)).ref.label == "my-gpt2@3"
    plain = tmp_path / "plain.yaml"
    plain.write_text(DEBUG.read_text())
    assert load_recipe(str(plain)).ref.label == "plain@1"  # without them, the file's stem


def test_in_a_recipe_dir_the_directory_wins(tmp_path):
    (tmp_path / "mine").mkdir()
    path = _with_meta(tmp_path / "mine" / "v2.yaml", "  name: other\n  version: 5\n")
    assert load_recipe(str(path)).ref.label == "mine@2"


def test_a_name_that_is_not_a_safe_directory_name_is_refused(tmp_path, capsys):
    path = _with_meta(tmp_path / "x.yaml", "  name: ../../escape\n")
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", str(path)])
    assert exited.value.code == 2 and "recipe.name" in capsys.readouterr().err


def test_the_default_run_directory_is_named_after_recipe_name(tmp_path, monkeypatch,
                                                              use_demo_cache):
    path = _with_meta(tmp_path / "experiment.yaml", "  name: my-gpt2\n  version: 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "run", str(path), "trainer.max_steps=1", "trainer.eval_every=null",
              "trainer.loggers=[]"])
    assert exited.value.code in (0, None)
    runs = [p.name for p in (tmp_path / "runs").iterdir()]
    assert len(runs) == 1 and runs[0].startswith("my-gpt2-v3-"), runs
