"""The process group a training run lives in, and the few collectives the runner needs.

One code path for every world size: even a plain ``python`` process (no torchrun, no
launcher) gets a 1-rank process group, because FSDP2 shards over a device mesh and a mesh
needs a process group. The 1-rank group rendezvous through an in-memory ``HashStore``, so
it costs a few milliseconds, opens no port and cannot collide with another run.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

# Attribute set on an exception that left distributed_world(): when it happened.
FAILED_AT_ATTR = "_llm_gym_failed_at"

# Variables torchrun / the elastic agent set for every worker.
_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Where this process sits in the run: its ranks, its device, the backend in use and,
    once the trainer has built it from ``trainer.parallel`` (runner/mesh.py), the device
    mesh every consumer shards over (None: not built yet). ``group`` is the process group
    of these ranks, which collectives among them use (None: the default group, every
    rank; a thread writing a checkpoint beside training has a gloo group of its own,
    async_checkpoint.py; the data-parallel world of a tensor-parallel run, runner/mesh.py,
    the group of its data-parallel ranks)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    mesh: Any = None  # torch.distributed.device_mesh.DeviceMesh
    group: Any = None  # torch.distributed.ProcessGroup


def launched_by_torchrun() -> bool:
    """True inside a worker started by torchrun or ``launch_local`` (rendezvous env present)."""
    return all(name in os.environ for name in _LAUNCHER_ENV)


def _pick_device(local_rank: int) -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        # Bind this process to its GPU before any CUDA work: NCCL and FSDP allocate on the
        # "current" device, and everyone on cuda:0 is the classic multi-GPU mistake.
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


@contextmanager
def distributed_world(timeout: timedelta | None = None) -> Iterator[World]:
    """Join (or create) the process group for this run and leave it cleanly on exit.

    Under torchrun or ``launch_local`` the group is initialised from the environment
    (``env://``). Otherwise a 1-rank group is made in-process, so callers never branch on
    the world size. On CUDA the backend is NCCL and each rank uses ``cuda:LOCAL_RANK``;
    on CPU it is gloo.

    Leaving: after a normal exit every rank meets at a barrier before the group is
    destroyed (without it, ranks intermittently abort while others still talk to them).
    When the body raised, the barrier is skipped: the other ranks may never arrive, and a
    failing rank must exit promptly so the launcher can stop the rest.

    If a process group already exists (a caller set one up), it is reused and left alone.
    """
    if dist.is_initialized():
        yield _world_from_group()
        return

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device, backend = _pick_device(local_rank)
    kwargs: dict = {} if timeout is None else {"timeout": timeout}
    if device.type == "cuda":
        # Binds the group to this rank's GPU up front, so NCCL never has to guess it.
        kwargs["device_id"] = device
    # init_process_group chains a "[rankN]: " prefixing sys.excepthook on every call;
    # put the previous one back on exit so repeated worlds in one process do not stack.
    previous_hook = sys.excepthook
    if launched_by_torchrun():
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    else:
        dist.init_process_group(
            backend=backend, store=dist.HashStore(), rank=0, world_size=1, **kwargs
        )
    world = World(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        device=device,
        backend=backend,
    )
    try:
        yield world
    except BaseException as exc:
        # Destroying the group makes peers fail at once with a connection error, often
        # before this rank has finished reporting; the timestamp lets the launcher name
        # the rank that failed first.
        with suppress(AttributeError, TypeError):
            setattr(exc, FAILED_AT_ATTR, time.time())
        _leave(previous_hook, barrier=False)
        raise
    _leave(previous_hook, barrier=True)


def _leave(previous_hook: Callable[..., Any], *, barrier: bool) -> None:
    try:
        if barrier:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        sys.excepthook = previous_hook


def _world_from_group() -> World:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = str(dist.get_backend())
    if torch.cuda.is_available() and "nccl" in backend:
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return World(dist.get_rank(), local_rank, dist.get_world_size(), device, backend)


def is_main(world: World) -> bool:
    """Rank 0 logs, prints progress and writes run-level files."""
    return world.rank == 0


T = TypeVar("T", float, torch.Tensor)
T_obj = TypeVar("T_obj")


def all_reduce_mean(value: T, world: World) -> T:
    """Mean of ``value`` over all ranks; a float stays a float, a tensor stays a tensor.

    Used for logging (e.g. the loss of the global batch when each rank saw its share), so
    it always reduces in fp32 even when ``value`` is bf16.
    """
    if isinstance(value, torch.Tensor):
        out = value.detach().to(device=world.device, dtype=torch.float32).clone()
    else:
        out = torch.tensor(float(value), dtype=torch.float32, device=world.device)
    if world.world_size > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=world.group)
        out /= world.world_size
    if isinstance(value, torch.Tensor):
        return out.to(value.dtype)
    return float(out.item())


def broadcast_from_main(value: T_obj, world: World) -> T_obj:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=world.device if world.backend == "nccl" else None)
    return box[0]


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for ``rank`` derived from ``seed``.

    Mixing with ``SeedSequence`` rather than ``seed + rank`` keeps (seed=1, rank=0) and
    (seed=0, rank=1) from sharing a stream.
    """
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def seed_everything(seed: int, rank: int) -> None:
    """Seed python, numpy and torch (CPU and all CUDA devices) for this rank.

    Same ``seed`` and same world size give the same run. Parameters must be initialised
    identically on every rank (FSDP2 shards whatever each rank holds), so build the model
    after ``seed_everything(seed, 0)`` on every rank, then call ``seed_everything(seed,
    world.rank)`` so dropout and data sampling differ between ranks.
    """
    derived = rank_seed(seed, rank)
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # also seeds every CUDA device
