"""A PNG of the run's curves at its end (matplotlib: extra ``llm_gym[plot]``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from llm_gym.registry import ComponentConfig, component


@component("logger", "Curves", version=1)
class CurvesConfig(ComponentConfig):
    """Plots the run's curves to RUN_DIR/curves.png when it ends (needs matplotlib).

    The same figure as `llm_gym plot RUN_DIR`; skipped with a note when matplotlib is
    missing, and a failure to plot is a warning, never a failed run.
    """

    file: str = Field("curves.png", min_length=1, description="file name under RUN_DIR")

    @field_validator("file")
    @classmethod
    def _known_image_format(cls, file: str) -> str:
        # Refused when the recipe is validated, not in a warning at the end of the run.
        from llm_gym.errors import UserError
        from llm_gym.plotting import image_format, matplotlib_missing

        if matplotlib_missing() is None:  # without matplotlib, close() says so anyway
            try:
                image_format(Path(file), "file")
            except UserError as exc:
                raise ValueError(exc.message) from None
        return file

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
            from llm_gym.errors import UserError

            why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            print(f"warning: could not plot the curves: {why}", file=sys.stderr, flush=True)
            return
        print(f"curves: {out}", flush=True)
