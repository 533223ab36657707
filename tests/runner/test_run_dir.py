"""The run directory trusted only as far as it should be: no lock or metrics file written
through a link, a tidy directory after a finished or refused run, unique default names,
and a metrics.jsonl that survives a run killed early or a torn last line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.runner import run_dir as run_dir_module
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.run_dir import claim_default_run_dir, newest_run_dir
from llm_gym.runner.safety import RunDirLock

pytestmark = pytest.mark.usefixtures("use_demo_cache")

SHORT = ("trainer.max_steps=2", "trainer.eval_every=null")


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_a_lock_file_that_is_a_link_is_refused_and_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match=r"run/\.lock is a symbolic link"):
        run_recipe("gpt2-debug", SHORT, run_dir=run_dir)
    assert victim.read_text() == "precious\n"
    (run_dir / ".lock").unlink()
    os.mkfifo(run_dir / ".lock")
    with pytest.raises(UserError, match=r"run/\.lock is not a regular file"):
        RunDirLock(run_dir).__enter__()


@pytest.mark.parametrize("name", ["metrics.jsonl", "recipe.resolved.yaml", "tokenizer",
                                  "checkpoints"])
def test_a_run_directory_with_a_linked_file_is_refused_naming_it(tmp_path, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.jsonl").write_text("")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = elsewhere / "metrics.jsonl" if "." in name else elsewhere
    (run_dir / name).symlink_to(target)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(UserError) as caught:
        run_recipe("gpt2-debug", SHORT, run_dir=run_dir)
    assert f"{run_dir / name} is a symbolic link (to {target})" in str(caught.value)
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert (elsewhere / "metrics.jsonl").read_text() == ""
    assert sorted(p.name for p in run_dir.iterdir()) == [name]  # and no .lock left


def test_a_metrics_file_of_another_kind_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / "metrics.jsonl")
    with pytest.raises(UserError, match=r"run/metrics.jsonl is a FIFO \(named pipe\), not a file"):
        run_recipe("gpt2-debug", SHORT, run_dir=run_dir)


def test_a_finished_run_leaves_no_lock_and_a_refused_one_no_directory(tmp_path, monkeypatch):
    assert run_recipe("gpt2-debug", SHORT, run_dir=tmp_path / "done")["step"] == 2
    assert not (tmp_path / "done" / ".lock").exists()

    # Refused once the trainer is built (no room for a checkpoint), with the directory
    # given and with the default one; and refused on resume.
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(UserError, match="GiB free, but one checkpoint needs"):
        run_recipe("gpt2-debug", SHORT, run_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="GiB free, but one checkpoint needs"):
        run_recipe("gpt2-debug", SHORT)
    assert list((tmp_path / "runs").iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", real)
    with pytest.raises(UserError, match="--resume: no complete checkpoint"):
        run_recipe("gpt2-debug", SHORT, run_dir=tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()


def test_default_run_directories_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(run_dir_module.time, "strftime", lambda fmt: "20260101-120000")
    made = [claim_default_run_dir("tiny", 1, tmp_path) for _ in range(11)]
    assert len(set(made)) == 11 and all(p.is_dir() for p in made)
    assert made[1].name == "tiny-v1-20260101-120000-2"
    assert newest_run_dir("tiny", 1, tmp_path) == made[-1]  # -11 after -9, not before


def test_a_rerun_into_a_directory_without_checkpoint_does_not_repeat_steps(tmp_path):
    """Killed before its first checkpoint, a run leaves metrics behind (here: written as
    the killed run would have, its last line torn); running again starts fresh."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lines = [json.dumps({"step": s, "loss": 5.0}) + "\n" for s in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(lines) + '{"step": 4, "lo')
    run_recipe("gpt2-debug", SHORT, run_dir=run_dir)
    assert _steps(run_dir) == [1, 2]
    assert all(r["loss"] != 5.0 for r in read_metrics(run_dir / "metrics.jsonl"))


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_run_resumes(tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_recipe("gpt2-debug", SHORT, run_dir=run_dir)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 5.1')  # a full disk cut the line
    assert _steps(run_dir) == [1, 2]  # what `llm_gym plot` reads
    assert "metrics.jsonl:3: the last line is incomplete" in capfd.readouterr().err
    run_recipe("gpt2-debug", ["trainer.max_steps=4", "trainer.eval_every=null"],
               run_dir=run_dir, resume=True)
    assert _steps(run_dir) == [1, 2, 3, 4]
    text = (run_dir / "metrics.jsonl").read_text()
    # The torn fragment is gone (not a number that happens to contain "5.1"), and
    # every line that is left is whole JSON.
    assert '"loss": 5.1' not in text and text.endswith("\n")
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3, 4]


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a metrics record"):
        read_metrics(path)
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(UserError, match=r"pipe.jsonl: not a regular file"):  # no hang
        read_metrics(tmp_path / "pipe.jsonl")
