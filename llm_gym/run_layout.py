"""Where everything of a run lives under its directory: the one owner of those names.

::

    RUN_DIR/
      .lock                         while a run holds the directory (runner/safety.py)
      recipe.resolved.yaml          the recipe of the segment that started at step 0
      recipe.resolved.step_N.yaml   a segment that resumed from step N with changes
      metrics.jsonl                 one JSON record per line (runner/metrics.py)
      tokenizer/                    Hugging Face tokenizer files, where there is a form
      checkpoints/step_N/           runner/checkpoint.py
      profile/                      trainer.profile traces, CUDA out-of-memory snapshots
      eval/                         `llm_gym eval` results (evaluation/offline.py)

Every module that reads or writes one of these takes its name from here, and the paths
built from a name (a checkpoint's step, a rank's trace) are methods here, so a new entry,
or a renamed one, is one edit here. It knows paths only, nothing of what the files hold,
so any layer (runner, evaluation, hf, recipes) may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    LOCK = ".lock"
    RESOLVED_RECIPE = "recipe.resolved.yaml"
    METRICS = "metrics.jsonl"
    TOKENIZER = "tokenizer"
    CHECKPOINTS = "checkpoints"
    PROFILE = "profile"
    EVAL = "eval"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        """Where the complete checkpoint of ``step`` lives (or would live)."""
        return self.checkpoints / f"step_{step:08d}"

    @property
    def profile(self) -> Path:
        return self.root / self.PROFILE

    def profile_trace(self, rank: int) -> Path:
        return self.profile / f"rank{rank}.pt.trace.json"

    def oom_snapshot(self, rank: int) -> Path:
        return self.profile / ("oom-snapshot.pickle" if rank == 0
                               else f"oom-snapshot-rank{rank}.pickle")


def segment_recipe_name(start_step: int) -> str:
    """The file name of the resolved recipe of the segment that starts at ``start_step``."""
    return (RunLayout.RESOLVED_RECIPE if start_step == 0
            else f"recipe.resolved.step_{start_step:08d}.yaml")
