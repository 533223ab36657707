"""What the launcher hands every worker of a run: one picklable description of the job.

Its own module so that the launcher side (``runner/entry.py``) and the worker side
(``runner/trainer.py``, ``runner/run_messages.py``) both depend on it and not on each
other: ``entry`` starts the trainer; the trainer never imports ``entry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to load the same recipe as the launcher (picklable)."""

    spec: str
    overrides: tuple[str, ...]
    run_dir: Path
    resume: bool = False
    allow_drift: bool = False
    recipe_dirs: tuple[Path, ...] = field(default_factory=tuple)
    # Recipe keys a resume may change deliberately (``--allow-change``).
    allow_changes: tuple[str, ...] = ()
    # The launcher created run_dir for this run: a refused run removes it again.
    created_run_dir: bool = False
    # The recipe as the launcher resolved and checked it (recipes/loading.py's
    # ResolvedRecipe): workers validate it against their registry instead of loading
    # the files again. None: each worker loads spec and overrides (torchrun runs the
    # command itself on every rank).
    recipe: Any = None
