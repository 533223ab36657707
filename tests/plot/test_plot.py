"""``llm_gym plot``: several runs side by side, clear errors, matplotlib optional."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.errors import UserError
from llm_gym.plotting import plot_runs, read_run
from tests.conftest import REPO

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install 'llm_gym[plot]')",
)


def _run_dir(path: Path, tokens_per_step: int = 64, steps: int = 20) -> Path:
    path.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "loss": 5.0 / step ** 0.3, "lr": 1e-3 * min(1, step / 5),
                      "grad_norm": 1.0, "tokens_per_s": 1000.0 + step, "mfu": None,
                      "data_wait_pct": 0.1, "tokens": step * tokens_per_step})
        if step % 5 == 0:
            lines.append({"step": step, "eval_loss": 5.2 / step ** 0.3, "eval_perplexity": 9.0})
    lines[2]["loss"] = None  # a non-finite loss is recorded as null
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code


@needs_matplotlib
def test_two_runs_side_by_side(tmp_path, capsys):
    a = _run_dir(tmp_path / "small-batch")
    b = _run_dir(tmp_path / "big-batch", tokens_per_step=256)
    out = tmp_path / "figs" / "curves.png"
    assert _exit_code(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1500, 850)


def test_eval_points_map_to_tokens(tmp_path):
    run = read_run(_run_dir(tmp_path / "r", tokens_per_step=100))
    assert run.eval_steps == [5, 10, 15, 20] and run.eval_tokens() == [500, 1000, 1500, 2000]
    assert run.label == "r" and run.loss[2] is None and len(run.steps) == 20


def test_runs_of_the_same_name_are_told_apart(tmp_path):
    from llm_gym.plotting import _labels

    dirs = [tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c"]
    assert _labels(dirs) == [str(dirs[0]), str(dirs[1]), "c"]


def test_not_a_run_dir_is_a_user_error(tmp_path, capsys):
    assert _exit_code(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="no training records yet"):
        read_run(tmp_path)


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError, match=r"pip install 'llm_gym\[plot\]'"):
        plot_runs([_run_dir(tmp_path / "r")], tmp_path / "x.png")


def test_plot_help_imports_nothing_heavy():
    probe = ("import json, sys\nfrom llm_gym.cli.main import main\n"
             "try:\n    main(['plot', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps([m for m in ('torch', 'pydantic', 'numpy', 'matplotlib') "
             "if m in sys.modules]), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert "--out" in result.stdout
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []


def test_gpt2_tiny_plots_its_own_curves():
    from llm_gym.recipes.loading import load_recipe

    loggers = load_recipe("gpt2-tiny").recipe.trainer.loggers
    assert [entry.type_hint for entry in loggers] == ["Console", "Curves"]
