"""The run's device mesh: how its ranks replicate and shard the model.

``trainer.parallel`` names the sizes of two data-parallel dimensions, ``dp_replicate``
(whole copies of the sharded model, typically one per node) and ``dp_shard`` (the ranks
each copy shards its parameters over, typically a node's GPUs); ``-1`` is "the rest of
the world". The default, one replica sharded over every rank, is plain FSDP2; more than one
replica is HSDP: parameters are gathered within a replica and gradients reduce-scattered
there, then averaged across replicas, so the slow links between nodes carry one
all-reduce of a shard per step instead of every all-gather.

Both dimensions are data parallel: every rank reads its own share of the batch, so the
data, the losses and the fixed global batch (runner/batch_layout.py) do not depend on how
the world is split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from llm_gym.errors import UserError
from llm_gym.runner.distributed import World
from llm_gym.runner.settings import ParallelSettings

MESH_DIMS = ("dp_replicate", "dp_shard")


@dataclass(frozen=True)
class MeshShape:
    dp_replicate: int
    dp_shard: int

    @property
    def sizes(self) -> tuple[int, int]:
        return self.dp_replicate, self.dp_shard


def mesh_shape(parallel: Any, world_size: int) -> MeshShape:
    """``trainer.parallel``'s sizes on ``world_size`` ranks, ``-1`` resolved; a split whose
    product is not the world size is a UserError naming the setting and what would fit."""
    replicate, shard = parallel.dp_replicate, parallel.dp_shard
    if shard == -1:
        if world_size % replicate:
            fits = [r for r in range(1, world_size + 1) if world_size % r == 0]
            raise UserError(
                f"trainer.parallel.dp_replicate: {replicate} replicas do not divide the "
                f"{world_size} ranks; with {world_size} ranks it can be "
                f"{', '.join(map(str, fits))}")
        shard = world_size // replicate
    if replicate * shard != world_size:
        raise UserError(
            f"trainer.parallel: dp_replicate {replicate} x dp_shard {shard} = "
            f"{replicate * shard} ranks, but the run has {world_size}; set dp_shard: -1 "
            "(the rest), or sizes whose product is the world size")
    return MeshShape(replicate, shard)


def build_mesh(parallel: Any, world_size: int, device_type: str) -> DeviceMesh:
    """The 2-D ``(dp_replicate, dp_shard)`` mesh of the current process group."""
    shape = mesh_shape(parallel, world_size)
    return init_device_mesh(device_type, shape.sizes, mesh_dim_names=MESH_DIMS)


def with_mesh(world: World, parallel: Any = None) -> World:
    """``world`` holding the mesh ``parallel`` (``trainer.parallel``; None: its defaults,
    one copy sharded over every rank) describes, built once; a world that already holds
    one is returned as it is."""
    if world.mesh is not None:
        return world
    mesh = build_mesh(parallel or ParallelSettings(), world.world_size, world.device.type)
    return replace(world, mesh=mesh)


def shard_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """What ``fully_shard`` takes: the 1-D shard mesh for plain FSDP2 (one replica), the
    2-D ``(replicate, shard)`` mesh for HSDP."""
    if mesh["dp_replicate"].size() == 1:
        return mesh["dp_shard"]
    return mesh
