"""A PNG of the run's curves at its end (matplotlib: extra ``llm_gym[plot]``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from llm_gym.registry import ComponentConfig, component


@component("logger", "Curves", version=1)
class CurvesConfig(ComponentConfig):
    """Plots the run's curves to RUN_DIR/curves.png when it ends (needs matplotlib).

    The same figure as `llm_gym plot RUN_DIR`; skipped with a note when matplotlib is
    missing, and a failure to plot is a warning, never a failed run.
    """

    file: str = Field("curves.png", min_length=1, description="file name under RUN_DIR")

    def build(self, run_dir: Path) -> CurvesAtEnd:
        return CurvesAtEnd(Path(run_dir), self.file)


class CurvesAtEnd:
    def __init__(self, run_dir: Path, file: str) -> None:
        self.run_dir, self.file = run_dir, file

    def log_train(self, record: dict[str, Any]) -> None:
        pass  # everything is in metrics.jsonl, which holds the resumed run's history too

    log_eval = log_train

    def close(self) -> None:
        from llm_gym.plotting import matplotlib_missing, plot_runs

        missing = matplotlib_missing()
        if missing:
            print(f"note: {self.file} not written: {missing}", file=sys.stderr, flush=True)
            return
        try:
            out = plot_runs([self.run_dir], self.run_dir / self.file)
        except Exception as exc:  # a plot is a convenience: the run itself succeeded
            print(f"warning: could not plot the curves: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            return
        print(f"curves: {out}", flush=True)
