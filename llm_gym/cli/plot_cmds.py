"""``llm_gym plot RUN_DIR... --out curves.png``. matplotlib is imported only inside the
command (an optional extra), so ``llm_gym --help`` stays instant."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...",
                type=click.Path(path_type=Path))
@click.option("--out", "out", default=Path("curves.png"), show_default=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Image to write; the suffix picks the format (.png, .svg, .pdf).")
@click.option("--title", default=None, help="Figure title; default: the run names.")
def plot(run_dirs: tuple[Path, ...], out: Path, title: str | None) -> None:
    """Plot loss and eval loss, learning rate and throughput, against steps and against
    tokens, from each RUN_DIR/metrics.jsonl; several runs side by side (needs matplotlib:
    pip install 'llm_gym[plot]')."""
    from llm_gym.cli.output import out as stdout
    from llm_gym.plotting import plot_runs

    written = plot_runs(list(run_dirs), out, title=title)
    stdout.print(f"wrote {written}", markup=False, highlight=False)
