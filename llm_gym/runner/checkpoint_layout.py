"""Checkpoint files in the unsharded layout whatever the tensor-parallel cut.

DCP stores each rank's part of a DTensor as one block of the whole tensor. A fused
projection cut part by part (``_StridedShard``, runner/tensor_parallel.py) holds several
blocks per rank (rank r: rows of q, of k and of v), which DCP cannot describe as one and
refuses as overlapping. :func:`as_blocks` hands DCP such a tensor as its blocks (torch's
``LocalShardsWrapper``, which DCP saves and loads block by block), views of the rank's
own shard, so nothing is copied and a load writes into the parameter itself. The files
then hold the whole tensor in its usual layout: a run can resume on another cut, and
export reads it like any other checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor._shards_wrapper import LocalShardsWrapper
from torch.distributed.tensor.placement_types import _StridedShard


@contextmanager
def as_blocks(state: Any) -> Iterator[Any]:
    """Within: ``state`` (nested dicts and lists) with every DTensor whose shard is not one
    block of the whole replaced, in place, by a DTensor of its blocks; on leaving, the
    originals are back. In place, because DCP's load puts the values it does not load
    into tensors (an optimizer's step, a learning rate) into the containers it is given."""
    swapped: list[tuple[Any, Any, DTensor]] = []
    _swap(state, swapped)
    try:
        yield state
    finally:
        for container, key, original in swapped:
            container[key] = original


def _swap(state: Any, swapped: list[tuple[Any, Any, DTensor]]) -> None:
    items = state.items() if isinstance(state, dict) else (
        enumerate(state) if isinstance(state, list) else ())
    for key, value in list(items):
        if isinstance(value, DTensor) and any(isinstance(p, _StridedShard)
                                              for p in value.placements):
            swapped.append((state, key, value))
            state[key] = _blocks(value)
        else:
            _swap(value, swapped)


def _blocks(tensor: DTensor) -> DTensor:
    runs = [_runs(_local_indices(tensor, dim)) for dim in range(tensor.ndim)]
    local = tensor.to_local()
    shards, offsets = [], []
    for combo in itertools.product(*runs):
        view = local
        for dim, (local_start, _, length) in enumerate(combo):
            view = view.narrow(dim, local_start, length)
        shards.append(view)
        offsets.append(tuple(start for _, start, _ in combo))
    return DTensor(LocalShardsWrapper(shards, offsets), tensor._spec, requires_grad=False)


def _local_indices(tensor: DTensor, dim: int) -> torch.Tensor:
    """The indices along ``dim`` of the whole tensor that this rank's shard holds, in its
    order: the placements that cut ``dim`` applied to an index vector, without talking."""
    placements = []
    for p in tensor.placements:
        if isinstance(p, _StridedShard) and p.dim == dim:
            placements.append(_StridedShard(0, split_factor=p.split_factor))
        elif isinstance(p, Shard) and p.dim == dim:
            placements.append(Shard(0))
        else:
            placements.append(Replicate())
    index = torch.arange(tensor.shape[dim], device=tensor.to_local().device)
    return distribute_tensor(index, tensor.device_mesh, placements,
                             src_data_rank=None).to_local().cpu()


def _runs(indices: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(local start, global start, length)`` of each run of consecutive indices."""
    values = indices.tolist()
    runs: list[tuple[int, int, int]] = []
    for local, value in enumerate(values):
        if runs and runs[-1][1] + runs[-1][2] == value:
            start_local, start, length = runs[-1]
            runs[-1] = (start_local, start, length + 1)
        else:
            runs.append((local, value, 1))
    return runs
