"""A recipe that is a FIFO, a directory or a device, given by path or found in a
--recipe-dir, is refused without being read: reading a FIFO blocks until someone writes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gym import fileio
from llm_gym.cli.main import main
from llm_gym.config.yaml_files import read_yaml_file
from llm_gym.errors import UserError

FIFO = "is a FIFO (named pipe), not a regular file"


def _blocked(signum: int, frame: object) -> None:
    raise AssertionError("reading the recipe blocked on the FIFO")


@pytest.fixture(autouse=True)
def never_block() -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _blocked)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    (tmp_path / "rd" / "piped").mkdir(parents=True)
    os.mkfifo(tmp_path / "rd" / "piped" / "v1.yaml")
    return tmp_path / "rd"


def test_a_fifo_given_as_the_recipe_is_named_as_a_fifo(capsys, tmp_path):
    os.mkfifo(tmp_path / "r.yaml")
    code, output = _cli(capsys, "recipe", "validate", str(tmp_path / "r.yaml"))
    assert code == 2 and f"r.yaml: {FIFO}" in output and "Traceback" not in output


def test_a_directory_given_as_the_recipe_is_named_as_one(capsys, tmp_path):
    (tmp_path / "d.yaml").mkdir()
    code, output = _cli(capsys, "recipe", "validate", str(tmp_path / "d.yaml"))
    assert code == 2 and "d.yaml: is a directory, not a regular file" in output


@pytest.mark.parametrize("command", ["show", "validate", "lock"])
def test_a_fifo_in_a_recipe_dir_is_refused_by_name(capsys, recipe_dir, command):
    code, output = _cli(capsys, "recipe", command, "piped", "--recipe-dir", str(recipe_dir))
    assert code == 2, output
    assert f"piped/v1.yaml: {FIFO}" in output and "Traceback" not in output


def test_recipe_list_shows_a_fifo_as_unreadable(capsys, recipe_dir):
    code, output = _cli(capsys, "recipe", "list", "--recipe-dir", str(recipe_dir))
    assert code in (0, None) and "piped" in output and "(unreadable)" in output


def test_a_fifo_swapped_in_after_the_check_is_still_not_read(tmp_path, monkeypatch):
    """Between the type check and the open, a file can be replaced: the open itself
    must not block, and the open file is checked again."""
    os.mkfifo(tmp_path / "r.yaml")
    monkeypatch.setattr(fileio, "check_input_file", lambda path, what="": None)
    with pytest.raises(UserError, match=FIFO.replace("(", r"\(").replace(")", r"\)")):
        read_yaml_file(tmp_path / "r.yaml", what="recipe file")
