"""Where a run's checkpoints live, and removing only what this run wrote there.

``RUN_DIR/checkpoints`` must be a real directory: through a symlink, two runs would share
one target and each would see (and prune, and clean up) the other's checkpoints, so a
symlinked or non-directory ``checkpoints`` is refused, naming it.

A save in progress is ``step_00000100.<run>.<pid>-<token>.tmp``: ``<run>`` identifies the
run directory (its device and inode, so it survives a resume but not a copy elsewhere),
``<pid>-<token>`` the writing process. Leftovers of a crashed save are removed only when
they carry this run directory's id; anything else in ``checkpoints/`` (another tool's
files, a ``.tmp`` of unknown origin) is left alone. Nothing here removes through a
symlink: symlinked entries are neither checkpoints nor leftovers.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from llm_gym.errors import UserError
from llm_gym.run_layout import RunLayout
from llm_gym.runner.checkpoint_marker import MARKER, STEP_DIR, has_marker
from llm_gym.runner.distributed import World

CHECKPOINTS = RunLayout.CHECKPOINTS
TMP_SUFFIX = ".tmp"


def checkpoints_root(run_dir: Path) -> Path:
    """``run_dir/checkpoints``, refused (``UserError``) when it is a symlink or not a
    directory. It may not exist yet."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_symlink():
        raise UserError(
            f"{root} is a symlink (to {os.readlink(root)}); llm_gym does not follow it, "
            "since runs sharing its target would delete each other's checkpoints. Put the "
            "run directory itself on that disk (--run-dir) instead"
        )
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is not a directory; move it away, it is where this "
                        "run's checkpoints go")
    return root


def run_id(run_dir: Path) -> str:
    """This run directory's identity in temporary names (stable across resumes)."""
    st = os.stat(run_dir)
    return f"{st.st_dev:x}-{st.st_ino:x}"


def writer_token(world: World) -> str:
    """``<pid>-<random>`` of rank 0, the same on every rank (a collective call)."""
    mine = torch.tensor([os.getpid(), secrets.randbits(31)], dtype=torch.int64,
                        device=world.device)
    if world.world_size > 1:
        dist.broadcast(mine, src=0, group=world.group)
    pid, token = mine.tolist()
    return f"{pid}-{token:08x}"


def temp_path(final: Path, run: str, writer: str, kind: str = "") -> Path:
    """The temporary name of ``final`` while it is written (``kind``: "replaced" for the
    copy moved aside when a step is saved again)."""
    return final.with_name(".".join(p for p in (final.name, kind, run, writer) if p)
                           + TMP_SUFFIX)


def remove_own_leftovers(root: Path, run: str) -> None:
    """Remove the ``.tmp`` directories a crashed save of this run directory left."""
    own = re.compile(rf"^step_\d{{8,}}(\.replaced)?\.{re.escape(run)}\.\d+-[0-9a-f]+"
                     rf"{re.escape(TMP_SUFFIX)}$")
    for child in root.iterdir():
        if own.match(child.name):
            remove_tree(child)


def remove_tree(path: Path) -> None:
    """Delete the directory ``path`` and what is in it; a symlink is unlinked itself, never
    followed (nor are symlinks inside: rmtree unlinks them)."""
    try:
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    except OSError:
        pass  # best effort: what is left is ignored, and removed by the next save


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the completed checkpoints under ``root``, by step: directories
    named ``step_N`` (not symlinks) with a marker. The marker is validated on load."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and not child.is_symlink() and child.is_dir() and has_marker(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune(root: Path, keep: Path, keep_last: int | None) -> None:
    """Delete all but the ``keep_last`` newest completed checkpoints, never ``keep``."""
    if keep_last is None:
        return
    older = [p for _, p in complete_checkpoints(root) if p != keep]
    for stale in older[: max(0, len(older) - (keep_last - 1))]:
        if not stale.is_symlink():
            # The marker first: a removal cut short leaves no "complete" checkpoint.
            (stale / MARKER).unlink(missing_ok=True)
        remove_tree(stale)

