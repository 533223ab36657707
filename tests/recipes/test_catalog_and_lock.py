"""Recipes: found by name and version, from user directories too; pinned and re-pinned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from llm_gym.cli.main import main
from llm_gym.errors import UserError
from llm_gym.recipes.catalog import RecipeCatalog
from tests.conftest import REPO

DEBUG = REPO / "recipes" / "gpt2-debug" / "v1.yaml"


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.fixture
def user_recipes(tmp_path: Path) -> Path:
    """A user's recipe directory holding `mine` at versions 1 and 2."""
    root = tmp_path / "my-recipes"
    (root / "mine").mkdir(parents=True)
    shutil.copy(DEBUG, root / "mine" / "v1.yaml")
    text = DEBUG.read_text().replace("max_steps: 8", "max_steps: 5")
    (root / "mine" / "v2.yaml").write_text(text.replace("Smallest GPT-2", "Second version"))
    return root


def test_versions_side_by_side_and_bare_name_means_newest(user_recipes):
    catalog = RecipeCatalog([user_recipes])
    assert [r.version for r in catalog.versions("mine")] == [1, 2]
    assert catalog.resolve("mine").version == 2
    assert catalog.resolve("mine@1").path == user_recipes / "mine" / "v1.yaml"
    assert catalog.resolve("mine@v2").description().startswith("Second version")
    with pytest.raises(UserError, match="no version 3"):
        catalog.resolve("mine@3")


def test_user_dirs_come_from_option_and_environment(capsys, user_recipes, monkeypatch):
    code, out = _cli(capsys, "recipe", "list", "--recipe-dir", str(user_recipes))
    assert code == 0 and "mine" in out and "1, 2" in out and "gpt2-tiny" in out
    monkeypatch.setenv("LLM_GYM_RECIPE_PATH", str(user_recipes))
    code, out = _cli(capsys, "recipe", "show", "mine@1")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["trainer"]["max_steps"] == 8
    assert shown["model"]["config"]["n_positions"] == 32  # interpolation resolved
    assert shown["optimizer"]["type_hint"] == "AdamW"


def test_show_applies_overrides(capsys):
    code, out = _cli(capsys, "recipe", "show", "gpt2-debug", "trainer.seq_len=16")
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["trainer"]["seq_len"] == 16 and shown["model"]["config"]["n_positions"] == 16


def test_lock_repins_only_the_pins_block(capsys, tmp_path):
    path = tmp_path / "v1.yaml"
    original = DEBUG.read_text()
    drifted = original.replace("model/GPT2: {version: 1, fingerprint: ",
                               "model/GPT2: {version: 9, fingerprint: ")
    drifted = drifted.replace("loss:\n", "# a comment that must survive\nloss:\n")
    path.write_text(drifted)
    assert _cli(capsys, "recipe", "validate", str(path))[0] == 2
    code, out = _cli(capsys, "recipe", "lock", str(path))
    assert code == 0 and "model/GPT2: version 9 -> 1" in out
    locked = path.read_text()
    assert "# a comment that must survive" in locked
    assert locked == original.replace("loss:\n", "# a comment that must survive\nloss:\n")
    assert _cli(capsys, "recipe", "validate", str(path))[0] == 0
    code, out = _cli(capsys, "recipe", "lock", str(path))
    assert "pins already match" in out


def test_lock_adds_pins_to_a_recipe_without_them(capsys, tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text(DEBUG.read_text().split("\n# Written by")[0].split("\npins:")[0] + "\n")
    code, out = _cli(capsys, "recipe", "validate", str(path))
    assert code == 2 and "used but not pinned" not in out  # said once, not per component
    assert out.count("not pinned yet") == 1
    assert f"run `llm_gym recipe lock {path}`" in out
    code, out = _cli(capsys, "recipe", "validate", str(path), "--allow-drift")
    assert code == 0 and out.count("not pinned yet") == 1
    code, out = _cli(capsys, "recipe", "lock", str(path))
    assert code == 0 and "pinned 7 components: dataset/DemoCorpus, logger/Console, " in out
    pins = yaml.safe_load(path.read_text())["pins"]
    # The default logger (trainer.loggers) is pinned like any component it uses.
    assert set(pins) == {"dataset/DemoCorpus", "logger/Console", "loss/CrossEntropy",
                         "model/GPT2", "optimizer/AdamW", "scheduler/Constant",
                         "tokenizer/ByteLevel"}


def test_a_pin_no_longer_used_is_drift(capsys, tmp_path):
    path = tmp_path / "v1.yaml"
    path.write_text(DEBUG.read_text().replace("type_hint: Constant\n  config: {warmup_steps: 2}",
                                              "type_hint: StepLR\n  config: {step_size: 2, "
                                              "gamma: 0.5}"))
    code, out = _cli(capsys, "recipe", "validate", str(path))
    assert code == 2
    assert "scheduler/StepLR: used but not pinned" in out
    assert "scheduler/Constant: pinned but no longer used" in out


def test_builtin_recipes_validate_with_matching_pins(capsys, tmp_path, monkeypatch):
    from llm_gym.data.packed import PackedWriter

    # gpt2-124m trains on $LLM_GYM_DATA/corpus, which validate checks is a pack.
    with PackedWriter(tmp_path / "corpus", vocab_size=50257, eod_id=50256,
                      fingerprint="test") as pack:
        pack.add_document(list(range(5000)))
    monkeypatch.setenv("LLM_GYM_DATA", str(tmp_path))
    for name in ("gpt2-debug", "gpt2-tiny", "gpt2-124m"):
        code, out = _cli(capsys, "recipe", "validate", name)
        assert code == 0 and "pins match" in out, out


def test_original_run_alias_validates_like_recipe_run(capsys, tmp_path):
    broken = tmp_path / "config.yaml"
    broken.write_text(DEBUG.read_text().replace("lr: 1.0e-3", "lr: -1"))
    code, out = _cli(capsys, "run", "--config_file_path", str(broken))
    assert code == 2 and "optimizer.config.lr" in out


def test_overrides_may_swap_components_with_a_warning_but_not_hide_changed_ones(capsys,
                                                                                tmp_path):
    code, out = _cli(capsys, "recipe", "validate", "gpt2-debug", "optimizer.type_hint=SGD")
    assert code == 0 and "warning" in out
    assert "optimizer/SGD: used but not pinned" in out
    assert "optimizer/AdamW: pinned but no longer used" in out
    path = tmp_path / "v1.yaml"
    path.write_text(DEBUG.read_text().replace("model/GPT2: {version: 1, fingerprint: ",
                                              "model/GPT2: {version: 2, fingerprint: "))
    code, out = _cli(capsys, "recipe", "validate", str(path), "optimizer.type_hint=SGD")
    assert code == 2 and "model/GPT2: version 2 -> 1" in out
    assert "optimizer/SGD" not in out
