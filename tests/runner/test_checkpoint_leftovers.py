"""A run removes only what it wrote under ``checkpoints/``: never through a symlink, never
another run's save in progress."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.runner import checkpoint as ckpt
from llm_gym.runner.checkpoint import checkpoint_path, latest_checkpoint, save_checkpoint
from llm_gym.runner.checkpoint_dirs import run_id, temp_path
from llm_gym.runner.distributed import distributed_world

from . import dist_helpers as h


def _save(run_dir: Path, *steps: int, keep_last: int | None = 3) -> None:
    with distributed_world() as world:
        model = h.build(world)
        for step in steps:
            save_checkpoint(run_dir, step, model=model, optimizer=None, world=world,
                            extra={"step": step}, keep_last=keep_last)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _shared_target(tmp_path: Path) -> Path:
    """Another run's checkpoints: one complete, one save in progress."""
    other = tmp_path / "other_run"
    _save(other, 1)
    in_progress = temp_path(checkpoint_path(other, 2), run_id(other), "77-0000beef")
    in_progress.mkdir()
    (in_progress / "__0_0.distcp").write_bytes(b"being written")
    (other / ckpt.CHECKPOINTS / "step_00000003.tmp").mkdir()  # an older llm_gym's
    return other / ckpt.CHECKPOINTS


def test_a_symlinked_checkpoints_directory_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    target = _shared_target(tmp_path)
    before = _tree(target)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ckpt.CHECKPOINTS).symlink_to(target)
    with pytest.raises(UserError, match=f"{run_dir / ckpt.CHECKPOINTS} is a symlink"):
        _save(run_dir, 5)
    with pytest.raises(UserError, match="is a symlink"):
        latest_checkpoint(run_dir)
    assert _tree(target) == before
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["step_00000001", "step_00000003.tmp", temp_path(
            checkpoint_path(tmp_path / "other_run", 2), run_id(tmp_path / "other_run"),
            "77-0000beef").name])


def test_checkpoints_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ckpt.CHECKPOINTS).write_text("mine")
    with pytest.raises(UserError, match=f"{tmp_path / ckpt.CHECKPOINTS} is not a directory"):
        _save(tmp_path, 1)
    assert (tmp_path / ckpt.CHECKPOINTS).read_text() == "mine"


def test_symlinks_inside_checkpoints_are_never_followed(tmp_path: Path) -> None:
    target = _shared_target(tmp_path)
    before = _tree(target)
    run_dir = tmp_path / "run"
    _save(run_dir, 1)
    root = run_dir / ckpt.CHECKPOINTS
    # Named like this run's own crashed save, and like an old checkpoint to prune.
    own_name = temp_path(checkpoint_path(run_dir, 9), run_id(run_dir), "1-00000001")
    own_name.symlink_to(target)
    (root / "step_00000000").symlink_to(target / "step_00000001")
    inside = root / "step_00000001" / "link_to_other_run"
    inside.symlink_to(target)

    _save(run_dir, 2, 3, keep_last=1)  # removes own leftovers, prunes step 1 (and its link)
    assert _tree(target) == before
    assert latest_checkpoint(run_dir) == checkpoint_path(run_dir, 3)
    assert not (root / "step_00000001").exists() and not own_name.is_symlink()
    assert (root / "step_00000000").is_symlink()  # not ours: left alone


def test_a_save_in_progress_of_another_run_sharing_the_directory_is_kept(
    tmp_path: Path,
) -> None:
    """Two run directories whose checkpoints/ are one directory (a bind mount, a copy
    of the run that is still being written): neither removes the other's saves."""
    run_dir = tmp_path / "run"
    _save(run_dir, 1)
    root = run_dir / ckpt.CHECKPOINTS
    theirs = temp_path(checkpoint_path(run_dir, 2), run_id(tmp_path), f"{os.getpid()}-0000abcd")
    theirs.mkdir()
    (theirs / "__0_0.distcp").write_bytes(b"being written")
    _save(run_dir, 2)
    assert (theirs / "__0_0.distcp").read_bytes() == b"being written"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["step_00000001", "step_00000002", theirs.name])
