"""``recipe lock`` re-reads the recipe to rewrite its pins block: a FIFO at its path (put
there after the recipe was read, or swapped in between a type check and the open) is
refused with a UserError, without blocking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_gym import fileio
from llm_gym.errors import UserError
from llm_gym.recipes.pins import write_pins
from tests.fifo_helpers import FIFO, bounded

PINS = {"model/gpt2": {"version": "1.0.0", "fingerprint": "abc123def456"}}


def test_a_fifo_at_the_recipe_path_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "r.yaml")
    error = bounded(tmp_path / "r.yaml", lambda: write_pins(tmp_path / "r.yaml", PINS))
    assert isinstance(error, UserError) and f"r.yaml: {FIFO}" in str(error)


def test_a_fifo_swapped_in_after_a_type_check_is_refused_on_the_open_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.mkfifo(tmp_path / "r.yaml")
    # As if the path had passed a check by name and then been replaced.
    monkeypatch.setattr(fileio, "check_input_file", lambda path, what="": None)
    error = bounded(tmp_path / "r.yaml", lambda: write_pins(tmp_path / "r.yaml", PINS))
    assert isinstance(error, UserError) and f"r.yaml: {FIFO}" in str(error)


def test_a_regular_recipe_still_gets_its_pins(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("model: {}\r\n")
    write_pins(tmp_path / "r.yaml", PINS)
    assert "pins:" in (tmp_path / "r.yaml").read_text()
