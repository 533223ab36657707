"""``llm_gym plot``: several runs side by side, clear errors, matplotlib optional."""

from __future__ import annotations

import errno
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
    assert [entry.type_hint.name for entry in loggers] == ["Console", "Curves"]


@needs_matplotlib
def test_one_run_is_plotted_into_its_run_directory(tmp_path, capsys, monkeypatch):
    run = _run_dir(tmp_path / "run")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _exit_code(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run / 'curves.png'}"
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("value", "label"), [
    (0, "0"), (950, "950"), (1000, "1k"), (100_000, "100k"), (250_000, "250k"),
    (1_000_000, "1M"), (1_234_567, "1.23M"), (1.5e9, "1.5G"), (2e12, "2T"),
])
def test_token_counts_read_in_engineering_notation(value, label):
    from llm_gym.plotting import engineering

    assert engineering(value) == label


@needs_matplotlib
def test_the_tokens_axes_have_few_short_labels(tmp_path):
    from llm_gym.plotting import draw_curves

    figure = draw_curves([read_run(_run_dir(tmp_path / "r", tokens_per_step=100_000))])
    figure.canvas.draw()
    for ax in figure.axes[3:]:  # the second row: against tokens
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 7, labels
        assert all(len(text) <= 5 for text in labels), labels  # "1.5M", not "1500000"
        assert any(text.endswith("M") for text in labels), labels


def _bad_plot_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = str(_run_dir(tmp_path / "good"))
    (tmp_path / "not-a-dir").write_text("a file")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{not json\n{"step": 1, "loss": 2.0}\n')
    return [
        # (arguments, what the one-paragraph error must say)
        ([good, good + "2"], "--out FILE"),
        ([good, "--out", str(tmp_path / "c.foo")], "--out "),
        ([good, "--out", str(tmp_path / "curves")], "no suffix"),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "c.bmp")], ".bmp is not an image"),
        ([str(tmp_path), "--out", str(tmp_path / "c.png")], "no metrics.jsonl"),
        ([str(broken), "--out", str(tmp_path / "c.png")], f"{broken / 'metrics.jsonl'}"),
        ([good, "--out", str(tmp_path / "not-a-dir" / "c.png")], "not-a-dir"),
    ]


@needs_matplotlib
def test_bad_plot_inputs_are_clear_errors_that_write_nothing(tmp_path, capsys):
    for args, says in _bad_plot_inputs(tmp_path):
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        assert _exit_code(["plot", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err, (args, err)
        assert "Traceback" not in err
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, args


@needs_matplotlib
def test_an_unknown_suffix_lists_the_supported_ones(tmp_path, capsys):
    assert _exit_code(["plot", str(tmp_path / "missing"), "--out", "c.foo"]) == 2
    err = capsys.readouterr().err
    assert ".foo is not an image format" in err
    assert all(f".{fmt}" in err for fmt in ("png", "svg", "pdf"))


@needs_matplotlib
def test_a_full_disk_names_the_image_and_keeps_the_old_one(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    run = _run_dir(tmp_path / "run")
    (run / "curves.png").write_bytes(b"the previous image")

    def full(self, handle, **kwargs):
        handle.write(b"half an ima")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    assert _exit_code(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run / "curves.png") in err and "No space left" in err
    assert (run / "curves.png").read_bytes() == b"the previous image"
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]
