"""Sharded, atomic, verified training checkpoints: DCP for model and optimizer, a file per
rank.

Layout of ``<run_dir>/checkpoints/step_00000100/``:

- DCP's files (``.metadata`` and ``__<rank>_0.distcp`` shards): model and optimizer
  state, written by every rank in parallel; DCP can reshard them to another world size.
- ``rank<r>.pt``: what is private to rank r and has no meaning on another rank: the
  runner's ``extra`` (scheduler state, step, the rank's data position) and the rank's
  RNG states. Loaded with ``weights_only=True``, so it holds only tensors and plain
  Python values; ``save_checkpoint`` checks that before writing anything.
- ``COMPLETE``: a small JSON marker (step, world size, time, and the size and SHA-256 of
  every other file, hashed as it is written), written last (checkpoint_marker.py,
  checkpoint_digests.py, checkpoint_writer.py).

A checkpoint is written under a temporary name that carries this run directory's id
(checkpoint_dirs.py) and renamed once every rank is done and the marker exists, so a
crash mid-save leaves a ``.tmp`` directory that ``latest_checkpoint`` ignores and the next
save of the same run removes; the previous complete checkpoint is never touched until the
new one is complete.

Loading runs no code from the checkpoint and reads nothing it has not verified: the
marker is validated, the files checked against their digests, ``.metadata`` unpickled
with DCP's classes only, and the tensors compared with the model's
(checkpoint_reading.py, the path every reader of a checkpoint takes).
"""

from __future__ import annotations

import functools
import io
import os
import random
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from llm_gym.errors import UserError
from llm_gym.fileio import fsync_dir
from llm_gym.run_layout import RunLayout
from llm_gym.runner.checkpoint_digests import FileDigest, digest_bytes, digest_file, gather_digests
from llm_gym.runner.checkpoint_dirs import (
    CHECKPOINTS,
    checkpoints_root,
    complete_checkpoints,
    prune,
    remove_own_leftovers,
    remove_tree,
    run_id,
    temp_path,
    writer_token,
)
from llm_gym.runner.checkpoint_layout import as_blocks
from llm_gym.runner.checkpoint_marker import MARKER, marker_bytes, read_marker
from llm_gym.runner.checkpoint_metadata import METADATA_FILE
from llm_gym.runner.checkpoint_reading import dcp_error_text, load_state, open_checkpoint
from llm_gym.runner.checkpoint_writer import DigestingWriter
from llm_gym.runner.distributed import World, is_main

__all__ = ["CHECKPOINTS", "MARKER", "CheckpointWriteError", "Snapshot", "capture_rng_state",
           "checkpoint_path", "latest_checkpoint", "load_checkpoint", "restore_rng_state",
           "save_checkpoint", "take_snapshot", "write_checkpoint"]


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint's files failed (on any rank): a full disk, a quota, an I/O
    error. Raised on every rank; the partial checkpoint is already removed and the
    earlier complete ones are untouched."""


# DCP's writer for a checkpoint directory; a name here so that the benchmark can measure
# saving with DCP's plain FileSystemWriter beside it.
storage_writer = DigestingWriter


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the complete checkpoint of ``step`` lives (or would live)."""
    return RunLayout(run_dir).checkpoint(step)


@dataclass(frozen=True)
class Snapshot:
    """What a checkpoint of one step holds on this rank, taken between two steps: the
    rank's own state file (``extra`` and its RNG states, already serialised) and the DCP
    state of model and optimizer (live tensors, or a staged copy for a save in the
    background: async_checkpoint.py)."""

    payload: bytes
    state: dict[str, Any]


def take_snapshot(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    world: World,
    extra: dict[str, Any],
) -> Snapshot:
    """This rank's part of a checkpoint of the present step (a collective call).

    ``extra`` is this rank's own state (it may differ between ranks, e.g. the data
    position); this rank's python/numpy/torch RNG states are saved with it and restored
    by ``load_checkpoint``. ``extra`` is serialised here, at save time, so a value
    ``torch.load(weights_only=True)`` would refuse fails now, not at resume time when the
    run can no longer be fixed (``TypeError``, on every rank).
    """
    problem = None
    payload = b""
    try:
        payload = _encode_rank_state({"extra": extra, "rng": capture_rng_state()})
    except TypeError as exc:
        problem = str(exc)
    if not _all_ranks_agree(problem is None, world):
        raise TypeError(problem or "another rank's checkpoint `extra` cannot be saved")
    return Snapshot(payload, _dcp_state(model, optimizer))


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    world: World,
    extra: dict[str, Any],
    keep_last: int | None = 3,
) -> Path:
    """Write a checkpoint of ``step`` on every rank (a collective call); return its path.

    ``take_snapshot`` then ``write_checkpoint``: see both. After the new checkpoint is
    complete, all but the ``keep_last`` newest complete checkpoints (by step) are
    deleted; ``None`` keeps all. The checkpoint just written is never deleted.
    """
    snapshot = take_snapshot(model=model, optimizer=optimizer, world=world, extra=extra)
    return write_checkpoint(run_dir, step, snapshot, world=world, keep_last=keep_last)


def write_checkpoint(
    run_dir: Path,
    step: int,
    snapshot: Snapshot,
    *,
    world: World,
    keep_last: int | None = 3,
) -> Path:
    """Write ``snapshot`` as the complete checkpoint of ``step`` (a collective call over
    ``world.group``, so a thread of its own can run it beside training); return its path.

    Raises ``CheckpointWriteError`` on every rank when any rank failed to write (the
    partial checkpoint is removed, the earlier complete ones are untouched), ``UserError``
    when the checkpoints directory cannot be used.
    """
    _check_keep_last(keep_last)
    root = checkpoints_root(run_dir)  # every rank: a refused root is refused everywhere
    final = checkpoint_path(run_dir, step)
    writer = writer_token(world)
    # Each phase ends with all ranks agreeing it worked (which is also the barrier): a
    # rank that fails alone must not leave the others waiting in the next collective.
    prepare = functools.partial(_prepare, Path(run_dir), root, final, writer)
    _together(world, prepare if is_main(world) else None, "preparing")
    tmp = temp_path(final, run_id(run_dir), writer)
    try:
        own: dict[str, FileDigest] = {}  # filled by the writer as DCP writes each file
        try:
            _dcp_save(snapshot.state, tmp, storage_writer(tmp, own), world)
        except dcp.CheckpointException as exc:
            # Raised on every rank when any rank failed to write (disk full, ...). It is a
            # BaseException; re-raise as an ordinary error with the ranks' actual causes.
            raise CheckpointWriteError(dcp_error_text(exc)) from exc
        write_own = functools.partial(_write_own, tmp, world.rank, snapshot.payload, own)
        _together(world, write_own, "writing")
        digests = gather_digests(own, world)
    except (CheckpointWriteError, OSError, RuntimeError) as exc:
        # Every rank is here (both steps end in agreement). The partial files go at once:
        # on a full disk they hold the space the user needs back.
        if is_main(world):
            remove_tree(tmp)
        if isinstance(exc, CheckpointWriteError):
            raise
        raise CheckpointWriteError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    commit = functools.partial(_commit, tmp, final, step, world.world_size, keep_last,
                               digests, temp_path(final, run_id(run_dir), writer, "replaced"))
    _together(world, commit if is_main(world) else None, "completing")
    return final


def _dcp_save(state: dict[str, Any], path: Path, writer: Any, world: World) -> None:
    with as_blocks(state):  # a tensor-parallel cut saved in the unsharded layout
        if world.world_size > 1:
            dcp.save(state, checkpoint_id=path, storage_writer=writer,
                     process_group=world.group)
            return
        # One process plans alone: DCP's collectives would only pickle its plans and
        # metadata to itself (about a sixth of gpt2-tiny's save). DCP warns that it
        # assumes as much.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save(state, checkpoint_id=path, storage_writer=writer, no_dist=True)


def _check_keep_last(keep_last: int | None) -> None:
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 or None, got {keep_last}")


def _prepare(run_dir: Path, root: Path, final: Path, writer: str) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        run = run_id(run_dir)
        # Only this run directory's own: one save runs at a time (the run directory is
        # locked), so those are from a crashed save.
        remove_own_leftovers(root, run)
        temp_path(final, run, writer).mkdir()
    except OSError as exc:
        raise UserError(f"cannot write checkpoints under {root}: {exc}") from exc


def _write_own(tmp: Path, rank: int, payload: bytes, digests: dict[str, FileDigest]) -> None:
    """This rank's state file, and its digest beside those of the DCP files it wrote."""
    name = _rank_file(rank)
    _write_durably(tmp / name, payload)
    digests[name] = digest_bytes(payload)


def _commit(tmp: Path, final: Path, step: int, world_size: int, keep_last: int | None,
            digests: dict[str, FileDigest], aside: Path) -> None:
    # Every file was digested as it was written; anything else in the directory (none
    # today) is digested here rather than left unverified.
    for child in sorted(tmp.iterdir()):
        if child.name not in digests and child.name != MARKER and child.is_file():
            digests[child.name] = digest_file(child)
    _write_durably(tmp / MARKER, marker_bytes(step, world_size, digests))
    if final.exists() or final.is_symlink():
        # Saving the same step again (e.g. after resuming from it): move the old copy
        # aside under a .tmp name, so it is ignored and cleaned up if we crash here.
        os.replace(final, aside)
        os.replace(tmp, final)
        remove_tree(aside)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    prune(final.parent, final, keep_last)


def _together(world: World, action: Callable[[], None] | None, what: str) -> None:
    error = None
    try:
        if action is not None:
            action()
    except Exception as exc:
        error = exc
    if not _all_ranks_agree(error is None, world):
        if error is not None:
            raise error
        raise RuntimeError(f"{what} the checkpoint failed on another rank")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``run_dir``, or None.

    Directories without a ``COMPLETE`` marker (a save in progress or one that crashed,
    ``*.tmp``) are not checkpoints. A ``checkpoints`` that is a symlink or not a
    directory is refused (``UserError``).
    """
    found = complete_checkpoints(checkpoints_root(run_dir))
    return found[-1][1] if found else None


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    world: World,
    elastic: bool = False,
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG states from ``path``; return ``extra``.

    A collective call. On the world size that wrote the checkpoint each rank restores its
    own data position and RNG states. On another world size DCP reshards the model and
    optimizer; that is only allowed with ``elastic`` (a fixed global batch and a dataset
    whose position is global, which the caller checks): every rank then takes rank 0's
    ``extra``, the RNG states are not restored (the caller re-derives them) and
    ``extra["resharded_from"]`` holds the old world size. Otherwise a mismatch raises
    ``UserError`` naming both sizes. A missing, incomplete, corrupt or crafted
    checkpoint, or one whose tensors are not the model's and optimizer's, raises
    ``UserError`` naming ``path`` (and the file), on every rank.
    """
    path = Path(path)
    marker = read_marker(path)
    saved_world = marker.world_size
    resharding = saved_world != world.world_size
    if resharding and not elastic:
        raise UserError(
            f"checkpoint {path} was written by {saved_world} processes but this run has "
            f"{world.world_size}; resume with {saved_world} processes (the run's global "
            "batch follows its world size: only a run with trainer.global_batch_size or "
            "global_batch_tokens, on a dataset with a global position, resumes on another)"
        )
    # Every rank checks every file, so all ranks reach the same verdict without talking.
    rank_files = [_rank_file(r) for r in range(saved_world)]
    missing = [name for name in [METADATA_FILE, *rank_files] if not (path / name).is_file()]
    if missing:
        raise UserError(f"checkpoint {path} is damaged: missing {', '.join(missing)}")
    opened = open_checkpoint(path, marker, world, also=rank_files)
    if opened.note and is_main(world):
        print(f"note: {opened.note}", file=sys.stderr, flush=True)

    problem = None
    # Resharded, every rank takes rank 0's step and data position (the same on every
    # rank of a global-position dataset).
    own_file = _rank_file(0 if resharding else world.rank)
    try:
        own = torch.load(path / own_file, map_location="cpu", weights_only=True)
        extra, rng = own["extra"], own["rng"]
    except Exception as exc:  # any unreadable file is the same problem to the user
        problem = f"{own_file}: {type(exc).__name__}: {exc}"
    if not _all_ranks_agree(problem is None, world):
        detail = problem or "another rank could not read its state file"
        raise UserError(f"checkpoint {path} is damaged: {detail}")

    state = _dcp_state(model, optimizer)
    with as_blocks(state):  # views: loading fills the state's own tensors
        load_state(opened, state)
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
    if resharding:
        return {**extra, "resharded_from": saved_world}
    restore_rng_state(rng)
    return extra


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU (and current CUDA device) RNG states.

    As tensors and plain values, so the result loads with ``weights_only=True``.
    """
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    # get_state_dict gives fully-qualified parameter names and DTensor shards, so the
    # files do not depend on how the model was wrapped or on the world size.
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def _encode_rank_state(state: dict[str, Any]) -> bytes:
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise TypeError(
            "checkpoint `extra` must hold only tensors, numbers, strings, None, lists, "
            f"tuples and dicts (it is loaded with weights_only=True): {_first_line(exc)}"
        ) from exc
    return data


def _rank_file(rank: int) -> str:
    return f"rank{rank}.pt"


def _all_ranks_agree(ok: bool, world: World) -> bool:
    # A check that fails on one rank only must fail on all, or the others would wait
    # forever in the next collective.
    flag = torch.tensor([1 if ok else 0], device=world.device)
    if world.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=world.group)
    return bool(flag.item())


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
