"""Loading a run reads its saved ``tokenizer/tokenizer.json`` once, from a checked open
file: a FIFO there (or swapped in after a check by name) is a UserError, not a hang."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from llm_gym import fileio
from llm_gym.errors import UserError
from llm_gym.runner.loading_model import load_run_model
from tests.fifo_helpers import FIFO, bounded


@pytest.fixture
def run_with_fifo(debug_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(debug_run, run)
    (run / "tokenizer").mkdir(exist_ok=True)
    (run / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    os.mkfifo(run / "tokenizer" / "tokenizer.json")
    return run


@pytest.mark.parametrize("swapped", [False, True], ids=["there", "swapped in"])
def test_a_fifo_as_the_saved_tokenizer_is_refused(
    run_with_fifo: Path, shared_registry, monkeypatch: pytest.MonkeyPatch, swapped: bool
) -> None:
    if swapped:  # as if the path had passed a check by name and then been replaced
        monkeypatch.setattr(fileio, "check_input_file", lambda path, what="": None)
    fifo = run_with_fifo / "tokenizer" / "tokenizer.json"
    error = bounded(fifo, lambda: load_run_model(run_with_fifo, registry=shared_registry))
    assert isinstance(error, UserError), error
    assert f"{fifo}: {FIFO}" in str(error)
