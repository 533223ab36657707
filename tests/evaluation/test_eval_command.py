"""``llm_gym eval`` on a finished run: the same numbers as the run's own last evaluation,
one results file per checkpoint gathering every task, and bad input refused first."""

from __future__ import annotations

import json

from llm_gym.cli.eval_cmds import TASK_NAMES
from llm_gym.evaluation.offline import TASKS
from tests.evaluation.conftest import EXAMPLES, cli
from tests.evaluation.task_data import write_hellaswag


def test_task_names_of_the_command_are_the_tasks() -> None:
    assert TASK_NAMES == tuple(TASKS)


def test_eval_repeats_the_runs_last_evaluation_and_gathers_tasks(run, capsys) -> None:
    run_dir = run["run_dir"]
    last = [r for r in run["records"] if r["step"] == 8 and "eval/hellaswag/acc" in r][0]
    code, out = cli(capsys, "eval", str(run_dir), "--task", "hellaswag",
                    "--data", str(run["hellaswag"]))
    assert code == 0, out
    assert "hellaswag at step 8" in out and "acc_norm" in out
    code, out = cli(capsys, "eval", str(run_dir), "--step", "8", "--task", "perplexity",
                    "--data", str(run["texts"]), "--name", "text")
    assert code == 0, out
    results = json.loads((run_dir / "eval" / "8.json").read_text())
    assert results["step"] == 8 and results["checkpoint"].endswith("step_00000008")
    hs, text = results["tasks"]["hellaswag"], results["tasks"]["text"]
    assert hs["examples"] == EXAMPLES
    for metric in ("acc", "acc_norm", "truncated"):
        assert hs[metric] == last[f"eval/hellaswag/{metric}"]
    for metric in ("loss", "bits_per_byte", "tokens"):
        assert text[metric] == last[f"eval/text/{metric}"]
    # Again with a limit: its own entry is replaced, the other kept.
    code, _ = cli(capsys, "eval", str(run_dir), "--task", "hellaswag", "--limit", "3",
                  "--data", str(run["hellaswag"]))
    again = json.loads((run_dir / "eval" / "8.json").read_text())["tasks"]
    assert code == 0 and again["hellaswag"]["examples"] == 3 and again["text"] == text


def test_a_missing_step_or_a_bad_file_is_refused_and_nothing_written(run, tmp_path,
                                                                      capsys) -> None:
    run_dir = run["run_dir"]
    code, out = cli(capsys, "eval", str(run_dir), "--step", "3", "--task", "hellaswag",
                    "--data", str(run["hellaswag"]))
    assert code == 2 and "no complete checkpoint of step 3" in out and "steps 8" in out
    bad = write_hellaswag(tmp_path / "bad.jsonl", 2)
    bad.write_text(bad.read_text().replace('"label": ', '"label": 9, "x": ', 1))
    code, out = cli(capsys, "eval", str(run_dir), "--task", "hellaswag", "--data", str(bad))
    assert code == 2 and f"{bad}:1: label: 9 is out of range for 4 endings" in out, out
    assert not (run_dir / "eval" / "3.json").exists()
    code, out = cli(capsys, "eval", str(tmp_path), "--task", "perplexity", "--data", str(bad))
    assert code == 2 and "not a run directory" in out


def test_an_imported_run_is_evaluated_before_any_checkpoint(run, tmp_path, capsys) -> None:
    """``import hf`` then ``eval``: step 0, the imported weights, the same numbers."""
    last = [r for r in run["records"] if r["step"] == 8 and "eval/text/loss" in r][0]
    assert cli(capsys, "export", "hf", str(run["run_dir"]), str(tmp_path / "hf"))[0] == 0
    code, out = cli(capsys, "import", "hf", str(tmp_path / "hf"), "--out",
                    str(tmp_path / "imported"), "--recipe", "gpt2-debug")
    assert code == 0, out
    code, out = cli(capsys, "eval", str(tmp_path / "imported"), "--task", "perplexity",
                    "--data", str(run["texts"]))
    assert code == 0 and "perplexity at step 0" in out, out
    results = json.loads((tmp_path / "imported" / "eval" / "0.json").read_text())
    assert results["tasks"]["perplexity"]["loss"] == last["eval/text/loss"]
