"""Sharded, atomic training checkpoints: DCP for model and optimizer, a file per rank.

Layout of ``<run_dir>/checkpoints/step_00000100/``:

- DCP's files (``.metadata`` and ``__<rank>_0.distcp`` shards): model and optimizer
  state, written by every rank in parallel; DCP can reshard them to another world size.
- ``rank<r>.pt``: what is private to rank r and has no meaning on another rank: the
  runner's ``extra`` (scheduler state, step, the rank's data position) and the rank's
  RNG states. Loaded with ``weights_only=True``, so it holds only tensors and plain
  Python values; ``save_checkpoint`` checks that before writing anything.
- ``COMPLETE``: a small JSON marker (step, world size, time), written last.

A checkpoint is written under ``step_00000100.tmp/`` and renamed once every rank is
done and the marker exists, so a crash mid-save leaves a ``.tmp`` directory that
``latest_checkpoint`` ignores and the next save removes; the previous complete
checkpoint is never touched until the new one is complete.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
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
from llm_gym.runner.distributed import World, is_main

CHECKPOINTS = "checkpoints"
MARKER = "COMPLETE"
_TMP_SUFFIX = ".tmp"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint's files failed (on any rank): a full disk, a quota, an I/O
    error. Raised on every rank; the partial checkpoint is already removed and the
    earlier complete ones are untouched."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the complete checkpoint of ``step`` lives (or would live)."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


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

    ``extra`` is this rank's own state (it may differ between ranks, e.g. the data
    position); this rank's python/numpy/torch RNG states are saved with it and restored
    by ``load_checkpoint``. After the new checkpoint is complete, all but the
    ``keep_last`` newest complete checkpoints (by step) are deleted; ``None`` keeps all.
    The checkpoint just written is never deleted.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be at least 1 or None, got {keep_last}")
    # Serialise first: a value torch.load(weights_only=True) would refuse must fail
    # here, at save time, not at resume time when the run can no longer be fixed.
    problem = None
    try:
        payload = _encode_rank_state({"extra": extra, "rng": capture_rng_state()})
    except TypeError as exc:
        problem = str(exc)
    if not _all_ranks_agree(problem is None, world):
        raise TypeError(problem or "another rank's checkpoint `extra` cannot be saved")

    root = Path(run_dir) / CHECKPOINTS
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(final.name + _TMP_SUFFIX)
    # Each phase ends with all ranks agreeing it worked (which is also the barrier): a
    # rank that fails alone must not leave the others waiting in the next collective.
    prepare = functools.partial(_prepare, root, tmp) if is_main(world) else None
    _together(world, prepare, "preparing")
    state = _dcp_state(model, optimizer)
    try:
        try:
            dcp.save(state, checkpoint_id=tmp)
        except dcp.CheckpointException as exc:
            # Raised on every rank when any rank failed to write (disk full, ...). It is a
            # BaseException; re-raise as an ordinary error with the ranks' actual causes.
            raise CheckpointWriteError(_dcp_error(exc)) from exc
        _together(world, lambda: _write_durably(tmp / _rank_file(world.rank), payload),
                  "writing")
    except (CheckpointWriteError, OSError, RuntimeError) as exc:
        # Every rank is here (both steps end in agreement). The partial files go at once:
        # on a full disk they hold the space the user needs back.
        if is_main(world):
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, CheckpointWriteError):
            raise
        raise CheckpointWriteError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    commit = functools.partial(_commit, tmp, final, step, world.world_size, keep_last)
    _together(world, commit if is_main(world) else None, "completing")
    return final


def _prepare(root: Path, tmp: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(f"*{_TMP_SUFFIX}"):
            # Only one save runs at a time, so any .tmp here is from a crashed save.
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise UserError(f"cannot write checkpoints under {root}: {exc}") from exc


def _commit(tmp: Path, final: Path, step: int, world_size: int, keep_last: int | None) -> None:
    marker = {"step": step, "world_size": world_size, "time": time.time()}
    _write_durably(tmp / MARKER, json.dumps(marker).encode())
    if final.exists():
        # Saving the same step again (e.g. after resuming from it): move the old copy
        # aside under a .tmp name, so it is ignored and cleaned up if we crash here.
        aside = final.with_name(final.name + ".replaced" + _TMP_SUFFIX)
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    if keep_last is not None:
        older = [p for _, p in _complete_checkpoints(final.parent) if p != final]
        for stale in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(stale, ignore_errors=True)


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
    """The complete checkpoint with the highest step under ``run_dir``, if any.

    Directories without a readable ``COMPLETE`` marker (a save in progress or one that
    crashed, ``*.tmp``) are not checkpoints.
    """
    found = _complete_checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1][1] if found else None


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    world: World,
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG states from ``path``; return ``extra``.

    A collective call. The world size must be the one the checkpoint was written with:
    DCP could reshard model and optimizer, but each rank's data position and RNG state
    cannot be mapped onto a different number of ranks without silently changing what
    the run sees, so a mismatch raises ``UserError`` naming both sizes. A missing,
    incomplete or corrupt checkpoint raises ``UserError`` naming ``path``, on every rank.
    """
    path = Path(path)
    marker = _read_marker(path)
    if marker is None:
        raise UserError(f"{path} is not a complete checkpoint (no readable {MARKER} marker)")
    saved_world = int(marker.get("world_size", -1))
    if saved_world != world.world_size:
        raise UserError(
            f"checkpoint {path} was written by {saved_world} processes but this run has "
            f"{world.world_size}; resume with {saved_world} processes (per-rank data "
            "position and RNG state cannot be redistributed)"
        )
    # Every rank checks every file, so all ranks reach the same verdict without talking.
    needed = [".metadata", *(_rank_file(r) for r in range(world.world_size))]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise UserError(f"checkpoint {path} is damaged: missing {', '.join(missing)}")

    problem = None
    try:
        own = torch.load(path / _rank_file(world.rank), map_location="cpu", weights_only=True)
        extra, rng = own["extra"], own["rng"]
    except Exception as exc:  # any unreadable file is the same problem to the user
        problem = f"{_rank_file(world.rank)}: {type(exc).__name__}: {exc}"
    if not _all_ranks_agree(problem is None, world):
        detail = problem or "another rank could not read its state file"
        raise UserError(f"checkpoint {path} is damaged: {detail}")

    state = _dcp_state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=path)
    except (Exception, dcp.CheckpointException) as exc:
        # DCP gathers every rank's read errors and raises them on all ranks at once, as a
        # CheckpointException (a BaseException, hence named here).
        raise UserError(f"checkpoint {path} could not be read: {_dcp_error(exc)}") from exc
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
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


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and _read_marker(child) is not None:
            found.append((int(match.group(1)), child))
    return sorted(found)


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _rank_file(rank: int) -> str:
    return f"rank{rank}.pt"


def _all_ranks_agree(ok: bool, world: World) -> bool:
    # A check that fails on one rank only must fail on all, or the others would wait
    # forever in the next collective.
    flag = torch.tensor([1 if ok else 0], device=world.device)
    if world.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _dcp_error(exc: BaseException) -> str:
    # A CheckpointException's own text is a list of ranks plus tracebacks; the
    # underlying per-rank exceptions say what is actually wrong.
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        # Each value is (exception, traceback summary).
        errors = [f[0] if isinstance(f, tuple) else f for f in failures.values()]
        return "; ".join(sorted({f"{type(e).__name__}: {_first_line(e)}" for e in errors}))
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
