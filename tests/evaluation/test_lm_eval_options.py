"""``llm_gym eval --lm-eval``'s refusals that need neither lm-eval nor a trained model: the
extra not installed, flags of the other mode, a missing include directory. Each is exit
code 2 with a message naming what is wrong, before any model is loaded."""

from __future__ import annotations

import sys

import pytest

from tests.evaluation.conftest import cli


@pytest.fixture
def run_dir(tmp_path):
    """Enough of a run directory for the checks made before a model is loaded."""
    (tmp_path / "recipe.resolved.yaml").write_text("trainer: {max_steps: 1}\n")
    return tmp_path


def test_without_the_extra_the_error_names_it(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # the import fails
    code, out = cli(capsys, "eval", str(run_dir), "--lm-eval", "hellaswag")
    assert code == 2, out
    assert "--lm-eval needs lm-evaluation-harness" in out
    assert "pip install 'llm_gym[eval]'" in out and "Traceback" not in out


@pytest.mark.parametrize(("args", "message"), [
    ([], "give either --task (with --data) or --lm-eval TASKS"),
    (["--task", "hellaswag", "--lm-eval", "x"], "give either --task"),
    (["--lm-eval", "x", "--data", "f.jsonl"], "'--data': is for --task"),
    (["--lm-eval", "x", "--nproc", "2"], "'--nproc': is for --task"),
    (["--task", "hellaswag"], "'--data': --task needs the task's local file"),
    (["--task", "hellaswag", "--data", "f.jsonl", "--include-path", "."],
     "'--include-path': is for --lm-eval tasks"),
    (["--lm-eval", " , "], "--lm-eval: no task names given"),
    (["--lm-eval", "x", "--include-path", "no/such/dir"],
     "--include-path no/such/dir: not a directory of task YAML files"),
])
def test_flags_of_the_other_mode_are_refused(run_dir, capsys, args, message):
    code, out = cli(capsys, "eval", str(run_dir), *args)
    assert code == 2 and message in out, out
    assert "Traceback" not in out
    assert not (run_dir / "eval").exists()
