"""Training curves from ``RUN_DIR/metrics.jsonl`` as a PNG (``llm_gym plot``, the Curves logger).

Two rows, the same three panels against optimizer steps and against tokens seen: loss
with eval loss, learning rate, throughput; then one row more per downstream evaluator
(``eval/<name>/<metric>`` records), a panel per metric against steps. One colour per run,
so several runs compare side by side. matplotlib is an optional extra
(``llm_gym[plot]``), imported here only.
``plot_runs`` is the one drawing function: the Curves logger and ``llm_gym plot`` share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError

EXTRA_HINT = "pip install 'llm_gym[plot]' (or matplotlib)"

# Ticks per token axis: token counts are long numbers, even in engineering notation.
_TOKEN_TICKS = 5
# An evaluator's metrics that are bookkeeping (time, counts), not a curve worth a panel.
_BOOKKEEPING = ("seconds", "examples", "tokens", "bytes", "truncated")


def matplotlib_missing() -> str | None:
    """Why plotting is unavailable, or None when matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); {EXTRA_HINT}"
    return None


@dataclass
class RunCurves:
    label: str
    steps: list[int] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    loss: list[float | None] = field(default_factory=list)
    lr: list[float | None] = field(default_factory=list)
    tokens_per_s: list[float | None] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float | None] = field(default_factory=list)
    # "eval/<name>/<metric>" -> (steps, values), in record order.
    evaluators: dict[str, tuple[list[int], list[float | None]]] = field(default_factory=dict)

    def eval_tokens(self) -> list[float] | None:
        """Eval records carry only their step; tokens per step is constant within a run."""
        if not self.steps or not self.tokens or len(self.tokens) != len(self.steps):
            return None
        per_step = self.tokens[-1] / self.steps[-1]
        return [s * per_step for s in self.eval_steps]


def read_run(run_dir: Path, label: str | None = None) -> RunCurves:
    from llm_gym.runner.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
    try:
        records = read_metrics(path)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path}: not a metrics file ({exc})") from None
    run = RunCurves(label or run_dir.name)
    for rec in records:
        if "loss" in rec:
            run.steps.append(rec["step"])
            if rec.get("tokens") is not None:  # older runs did not record tokens
                run.tokens.append(rec["tokens"])
            run.loss.append(rec["loss"])
            run.lr.append(rec.get("lr"))
            run.tokens_per_s.append(rec.get("tokens_per_s"))
        elif "eval_loss" in rec:
            run.eval_steps.append(rec["step"])
            run.eval_loss.append(rec["eval_loss"])
        for key, value in rec.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] not in _BOOKKEEPING:
                steps, values = run.evaluators.setdefault(key, ([], []))
                steps.append(rec["step"])
                values.append(value if isinstance(value, (int, float)) else None)
    if not run.steps and not run.eval_steps and not run.evaluators:
        raise UserError(f"{path}: no training records yet")
    return run


def engineering(x: float) -> str:
    """A tick label in engineering notation: 0, 950, 100k, 1M, 1.5G."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def image_format(out: Path, what: str = "the image") -> str:
    """The format matplotlib writes for ``out``'s suffix; a UserError listing the
    supported suffixes when it has none or one matplotlib does not know."""
    missing = matplotlib_missing()
    if missing:
        raise UserError(f"plotting needs matplotlib: {missing}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    known = FigureCanvasAgg(Figure()).get_supported_filetypes()
    suffix = Path(out).suffix.lower().removeprefix(".")
    if suffix not in known:
        problem = (f".{suffix} is not an image format matplotlib writes" if suffix
                   else "no suffix to pick the image format by")
        raise UserError(f"{what} {out}: {problem}; supported: "
                        + ", ".join(f".{s}" for s in sorted(known)))
    return suffix


def plot_runs(run_dirs: Sequence[Path], out: Path, title: str | None = None) -> Path:
    """Write the curves of ``run_dirs`` to ``out`` (PNG, or any format matplotlib knows
    by the suffix), atomically; returns ``out``. A bad suffix is refused before any run
    is read; a write that fails (full disk, unwritable directory) is a UserError
    naming ``out`` and leaves whatever was there."""
    from llm_gym.fileio import atomic_output, make_parent_dirs

    fmt = image_format(out)
    runs = [read_run(Path(d), label) for d, label in zip(run_dirs, _labels(run_dirs), strict=True)]
    figure = draw_curves(runs, title)
    out = Path(out)
    make_parent_dirs(out)
    with atomic_output(out) as handle:
        figure.savefig(handle, format=fmt, dpi=100)
    return out


def draw_curves(runs: Sequence[RunCurves], title: str | None = None) -> Any:
    """The figure of ``runs``' curves (a matplotlib ``Figure`` on the Agg canvas)."""
    # The object API with the Agg canvas: no pyplot, no GUI backend, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    extra = evaluator_panels(runs)
    extra_rows = math.ceil(len(extra) / 3)
    figure = Figure(figsize=(15, 8.5 + 4 * extra_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 + extra_rows, 3, squeeze=False)
    palette = [f"C{i % 10}" for i in range(len(runs))]
    for row, by_tokens in enumerate((False, True)):
        loss_ax, lr_ax, speed_ax = axes[row]
        for run, colour in zip(runs, palette, strict=True):
            xs = run.tokens if by_tokens else run.steps
            if by_tokens and len(run.tokens) != len(run.steps):
                continue  # no token counts in this run's records
            _line(loss_ax, xs, run.loss, colour, run.label)
            eval_xs = run.eval_tokens() if by_tokens else run.eval_steps
            if eval_xs is not None:
                _line(loss_ax, eval_xs, run.eval_loss, colour, f"{run.label} (eval)",
                      linestyle="--", marker="o", markersize=4)
            _line(lr_ax, xs, run.lr, colour, run.label)
            _line(speed_ax, xs, run.tokens_per_s, colour, run.label)
        xlabel = "tokens" if by_tokens else "step"
        for ax, name in ((loss_ax, "loss"), (lr_ax, "learning rate"),
                         (speed_ax, "throughput (tokens/s)")):
            ax.set_title(f"{name} vs {'tokens' if by_tokens else 'steps'}", fontsize=11)
            ax.set_xlabel(xlabel)
            ax.grid(True, alpha=0.3)
            if by_tokens:  # 100000200000300000... otherwise: 100k 200k 300k
                ax.xaxis.set_major_locator(MaxNLocator(_TOKEN_TICKS))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: engineering(x)))
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    flat = [ax for row in axes[2:] for ax in row]
    for ax, key in zip(flat, extra, strict=False):
        for run, colour in zip(runs, palette, strict=True):
            if key in run.evaluators:
                _line(ax, *run.evaluators[key], colour, run.label, marker="o", markersize=4)
        ax.set_title(f"{key.removeprefix('eval/')} vs steps", fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in flat[len(extra):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("cross-entropy")
    axes[0][0].legend(fontsize=9)
    figure.suptitle(title or ", ".join(r.label for r in runs), fontsize=13)
    return figure


def evaluator_panels(runs: Sequence[RunCurves]) -> list[str]:
    """The ``eval/<name>/<metric>`` keys of any run, each once, in order of appearance."""
    return list(dict.fromkeys(key for run in runs for key in run.evaluators))


def _line(ax: Any, xs: Sequence[float], ys: Sequence[float | None], colour: str, label: str,
          **style: Any) -> None:
    """Plot the finite points only: a diverged step's loss is recorded as null."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
    if points:
        ax.plot(*zip(*points, strict=True), color=colour, label=label, linewidth=1.5, **style)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Run directory names; the whole path where two runs share a name."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(run_dirs, names, strict=True)]
