"""Examples split across data-parallel ranks by stride, and their counts summed back.

Every rank runs the same number of forward passes (a rank with one example fewer scores
a stand-in and drops it): a sharded (FSDP) model gathers its parameters inside each
forward, so ranks that ran a different number of passes would wait on each other forever.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from llm_gym.runner.distributed import World

T = TypeVar("T")


def shard_passes(items: Sequence[T], world: World) -> Iterator[tuple[T, bool]]:
    """``(item, counts)`` for this rank's items ``items[rank::world_size]``, padded with
    stand-ins (``counts`` False) to the same number of passes on every rank."""
    if not items:
        return
    mine = items[world.rank :: world.world_size]
    for i in range(math.ceil(len(items) / world.world_size)):
        yield (mine[i], True) if i < len(mine) else (items[0], False)


def sum_over_ranks(values: Sequence[float], world: World, *, dtype: torch.dtype) -> list[float]:
    """Each value summed over the world's ranks (``torch.int64`` for counts: exact at any world
    size; ``torch.float64`` for log-probabilities)."""
    out = torch.tensor(list(values), dtype=dtype, device=world.device)
    if world.world_size > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=world.group)
    return out.tolist()
