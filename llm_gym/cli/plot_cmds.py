"""``llm_gym plot RUN_DIR... [--out FILE]``. matplotlib is imported only inside the
command (an optional extra), so ``llm_gym --help`` stays instant."""

from __future__ import annotations

from pathlib import Path

import click

# What one run's curves are written to inside its run directory (the Curves logger's
# default file too, so a plot after the run refreshes the same image).
DEFAULT_NAME = "curves.png"


@click.command("plot", short_help="Plot runs' loss, learning rate and throughput to an image.")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...",
                type=click.Path(path_type=Path))
@click.option("--out", "out", default=None,
              type=click.Path(path_type=Path, dir_okay=False),
              help=f"Image to write; the suffix picks the format (.png, .svg, .pdf, ...). "
                   f"Default: RUN_DIR/{DEFAULT_NAME} for one run; required for several.")
@click.option("--title", default=None, help="Figure title; default: the run names.")
def plot(run_dirs: tuple[Path, ...], out: Path | None, title: str | None) -> None:
    """Plot loss and eval loss, learning rate and throughput, against steps and against
    tokens, from each RUN_DIR/metrics.jsonl; several runs side by side (needs matplotlib:
    pip install 'llm_gym[plot]').

    One run's image goes into its run directory unless --out says otherwise; a
    comparison of several runs needs --out, so it never replaces one run's own curves.
    """
    from llm_gym.cli.output import out as stdout
    from llm_gym.errors import UserError
    from llm_gym.plotting import image_format, plot_runs

    if out is None:
        if len(run_dirs) > 1:
            raise UserError(
                f"{len(run_dirs)} run directories: say where the comparison goes with --out "
                f"FILE (one run's image goes to RUN_DIR/{DEFAULT_NAME})"
            )
        out = run_dirs[0] / DEFAULT_NAME
    image_format(out, "--out")  # a bad suffix is refused before any run is read
    written = plot_runs(list(run_dirs), out, title=title)
    stdout.print(f"wrote {written}")
