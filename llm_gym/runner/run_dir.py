"""The run directory: its default name, the layout it must have, the segment recipes.

The layout (written by rank 0 only) is ``llm_gym/run_layout.py``'s ``RunLayout``.

The run appends to ``metrics.jsonl`` and writes into ``tokenizer/`` and ``checkpoints/``:
a symbolic link or a file of another kind in one of those places would make it write
somewhere else, so such a directory is refused before anything is written.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import time
from pathlib import Path

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, describe_file_type
from llm_gym.recipes.resolved import (
    RESOLVED_FILE,
    segment_file_name,
    segment_files,
)
from llm_gym.run_layout import RunLayout

METRICS_FILE = RunLayout.METRICS
CHECKPOINTS_DIR = RunLayout.CHECKPOINTS
TOKENIZER_DIR = RunLayout.TOKENIZER

# What each name the runner writes must be: a regular file or a real directory.
_EXPECTED = (
    (RunLayout.LOCK, "file"),
    (METRICS_FILE, "file"),
    ("recipe.resolved*.yaml", "file"),
    (TOKENIZER_DIR, "directory"),
    (CHECKPOINTS_DIR, "directory"),
)


def check_layout(run_dir: Path) -> None:
    """Refuse a run directory where a name the runner writes through is a symbolic link
    or not what it should be (and any file in ``tokenizer/`` that is not a plain file)."""
    if not run_dir.is_dir():
        return
    problems = []
    for entry in sorted(os.scandir(run_dir), key=lambda e: e.name):
        kind = next((k for pattern, k in _EXPECTED if fnmatch.fnmatchcase(entry.name, pattern)),
                    None)
        if kind is not None:
            problems += _misfits(Path(entry.path), kind)
        if entry.name == TOKENIZER_DIR and not entry.is_symlink() and entry.is_dir():
            for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                problems += _misfits(Path(inner.path), "file")
    if problems:
        raise UserError(
            f"run directory {run_dir} does not have the layout a run writes, so writing "
            "to it could change files elsewhere; nothing was written. Remove or replace "
            "what is named, or choose another --run-dir", problems)


def _misfits(path: Path, kind: str) -> list[str]:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return [f"{path} is a symbolic link (to {os.readlink(path)}), not a {kind}"]
    ok = stat.S_ISREG(mode) if kind == "file" else stat.S_ISDIR(mode)
    return [] if ok else [f"{path} is {describe_file_type(mode)}, not a {kind}"]


# -- the default name -------------------------------------------------------------------


_DEFAULT_NAME = re.compile(r"^(?P<base>.+-\d{8}-\d{6})(?:-(?P<n>\d+))?$")


def claim_default_run_dir(name: str, version: int, root: Path = Path("runs")) -> Path:
    """A new ``runs/<name>-v<V>-<date>-<time>`` directory, created here: ``mkdir`` is
    atomic, so two runs started in the same second get ``...-2``, ``...-3``."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{name}-v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UserError(f"cannot pick a new run directory under {root}/; pass --run-dir")


def newest_run_dir(name: str, version: int, root: Path = Path("runs")) -> Path:
    """The newest ``runs/<name>-v<V>-*`` directory, for ``--resume`` without --run-dir."""

    def started(path: Path) -> tuple[str, int]:
        match = _DEFAULT_NAME.match(path.name)
        return (match["base"], int(match["n"] or 1)) if match else (path.name, 0)

    existing = sorted((p for p in root.glob(f"{name}-v{version}-*") if p.is_dir()), key=started)
    if not existing:
        raise UserError(
            f"--resume: no earlier run of {name}@{version} under {root}/; pass --run-dir"
        )
    return existing[-1]


def remove_unused_run_dir(run_dir: Path) -> None:
    """Remove a directory this run created and refused to train in (call while holding
    its lock, so no other run can be using it)."""
    shutil.rmtree(run_dir, ignore_errors=True)


# -- one resolved recipe per segment ----------------------------------------------------


def checkpoint_recipe(run_dir: Path, step: int) -> Path:
    """The resolved recipe that wrote the checkpoint of ``step``: the newest segment that
    started before it (a segment writes checkpoints only past its start)."""
    earlier = [path for start, path in segment_files(run_dir) if start < step]
    if not earlier:
        raise UserError(
            f"{run_dir} has a checkpoint of step {step} but no {RESOLVED_FILE}: the recipe "
            "that wrote it is unknown, so a resume cannot be checked against it; restore "
            "the file or start a new --run-dir")
    return earlier[-1]


def write_segment_recipe(run_dir: Path, start_step: int, text: str, changed: bool) -> None:
    """Record the recipe of the segment starting at ``start_step``.

    Files of segments that started at or after it are removed first: the run resumes
    from its newest checkpoint, so nothing those segments trained remains (their steps
    are trimmed from metrics.jsonl too). The segment's own file is written when it
    starts the run (step 0) or changes the recipe; otherwise the earlier segment's
    file goes on describing the checkpoints it writes.
    """
    own = run_dir / segment_file_name(start_step)
    write = start_step == 0 or changed
    for start, path in segment_files(run_dir):
        if start >= start_step and not (write and path == own):
            path.unlink()
    if write:  # replaces an earlier attempt's file of the same start, atomically
        with atomic_output(own, "w", encoding="utf-8") as out:
            out.write(text)

