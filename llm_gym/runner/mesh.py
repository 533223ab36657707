"""The run's device mesh: how its ranks replicate, shard and split the model.

``trainer.parallel`` names the sizes of three dimensions. Two are data parallel:
``dp_replicate`` (whole copies of the sharded model, typically one per node) and
``dp_shard`` (the ranks each copy shards its parameters over, typically a node's GPUs);
``-1`` is "the rest of the world". The default, one replica sharded over every rank, is
plain FSDP2; more than one replica is HSDP: parameters are gathered within a replica and
gradients reduce-scattered there, then averaged across replicas, so the slow links
between nodes carry one all-reduce of a shard per step instead of every all-gather.
The third, ``tp``, is tensor parallel (runner/tensor_parallel.py): that many ranks split
every layer between them and run each step's forward together on the same samples.

Data parallelism is over ``dp_replicate x dp_shard`` ranks: each reads its own share of
the batch, so the data, the losses and the fixed global batch (runner/batch_layout.py)
depend on that number only, not on how the world is split. The ranks of a tensor-parallel
group read the same samples: datasets and evaluators see the data-parallel world
(:func:`data_parallel_world`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from llm_gym.errors import UserError
from llm_gym.runner.distributed import World
from llm_gym.runner.settings import ParallelSettings

MESH_DIMS = ("dp_replicate", "dp_shard", "tp")


@dataclass(frozen=True)
class MeshShape:
    dp_replicate: int
    dp_shard: int
    tp: int = 1

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.dp_replicate, self.dp_shard, self.tp

    @property
    def dp_size(self) -> int:
        """Data-parallel ranks: each reads its own share of every batch."""
        return self.dp_replicate * self.dp_shard


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def mesh_shape(parallel: Any, world_size: int) -> MeshShape:
    """``trainer.parallel``'s sizes on ``world_size`` ranks, ``-1`` resolved; a split whose
    product is not the world size is a UserError naming the setting and what would fit."""
    replicate, shard, tp = parallel.dp_replicate, parallel.dp_shard, parallel.tp
    if world_size % tp:
        raise UserError(f"trainer.parallel.tp: a tensor-parallel degree of {tp} does not "
                        f"divide the {world_size} ranks; with {world_size} ranks it can be "
                        f"{_divisors(world_size)}")
    dp_world = world_size // tp
    if shard == -1:
        if dp_world % replicate:
            among = "" if tp == 1 else f" data-parallel ({world_size} / tp {tp})"
            raise UserError(
                f"trainer.parallel.dp_replicate: {replicate} replicas do not divide the "
                f"{dp_world}{among} ranks; with {dp_world}{among} ranks it can be "
                f"{_divisors(dp_world)}")
        shard = dp_world // replicate
    if replicate * shard * tp != world_size:
        split = f"dp_replicate {replicate} x dp_shard {shard}" + (f" x tp {tp}" if tp > 1 else "")
        raise UserError(
            f"trainer.parallel: {split} = {replicate * shard * tp} ranks, but the run has "
            f"{world_size}; set dp_shard: -1 (the rest), or sizes whose product is the "
            "world size")
    return MeshShape(replicate, shard, tp)


def build_mesh(parallel: Any, world_size: int, device_type: str) -> DeviceMesh:
    """The 3-D ``(dp_replicate, dp_shard, tp)`` mesh of the current process group."""
    shape = mesh_shape(parallel, world_size)
    mesh = init_device_mesh(device_type, shape.sizes, mesh_dim_names=MESH_DIMS)
    if shape.tp > 1 and shape.dp_replicate > 1:
        # One group over all data-parallel ranks of a tensor-parallel index: what the data
        # world reduces over (HSDP's two dimensions as one). Collective: built here, once.
        mesh["dp_replicate", "dp_shard"]._flatten("dp")
    return mesh


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
    return mesh["dp_replicate", "dp_shard"]


def tp_size(world: World) -> int:
    """The tensor-parallel degree of ``world``'s mesh (1 without a mesh)."""
    return 1 if world.mesh is None else world.mesh["tp"].size()


def data_parallel_world(world: World) -> World:
    """The world as the data sees it: its rank and size among the data-parallel ranks,
    and their process group for reductions. Without tensor parallelism that is ``world``
    itself; with it, the ``tp`` ranks that split one model are one data-parallel rank,
    reading the same samples and counting once in every sum."""
    if tp_size(world) == 1:
        return world
    mesh = world.mesh
    if mesh["dp_replicate"].size() == 1:
        dp = mesh["dp_shard"]
    else:
        dp = mesh["dp"]  # flattened in build_mesh
    return replace(world, rank=dp.get_local_rank(), world_size=dp.size(),
                   group=dp.get_group())
