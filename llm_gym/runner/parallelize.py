"""Make a plain model trainable at scale: tensor parallelism, activation checkpointing,
compile, FSDP2.

The model code knows nothing of this module; the runner hands over the model and the list
of its repeated blocks. The order is fixed and matters:

0. tensor parallelism, when the mesh has a ``tp`` dimension above 1: the model's declared
   plan cuts its layers into DTensors over that dimension (runner/tensor_parallel.py);
   FSDP then shards those DTensors further over the data-parallel dimensions (2-D);
1. activation checkpointing per block: the recomputation boundary is the block's forward;
2. ``torch.compile`` per block: the compiled region then contains the checkpointed forward
   (compile understands ``torch.utils.checkpoint``), and compiling block by block keeps
   compile time flat in depth because every block has the same code;
3. ``fully_shard`` per block, then on the root: FSDP2's all-gather/reduce-scatter hooks
   sit on each block's ``__call__`` and therefore outside the compiled region, and the
   root call picks up whatever the blocks did not claim (embeddings, final norm, the
   head, and a head weight tied to the embedding, which thus stays one parameter).
   One rank in fp32 is left unwrapped: there is nothing to shard or cast.

Steps 1 and 2 replace the block's ``forward`` on the instance instead of wrapping the
module, so parameter names and ``state_dict`` keys stay exactly those of the plain model
(no ``_checkpoint_wrapped_module.`` or ``_orig_mod.`` prefixes in checkpoints).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from llm_gym.errors import UserError
from llm_gym.model_contract import as_language_model
from llm_gym.runner.distributed import World
from llm_gym.runner.mesh import shard_mesh, tp_size, with_mesh
from llm_gym.runner.tensor_parallel import (
    apply_tensor_parallel,
    plan_for_degree,
    strided_shard_placement,
)

ActivationCheckpointing = Literal["none", "full"] | int

# Set on a block once its forward has been replaced, so a second call fails loudly
# instead of nesting checkpoints or compiles.
_MARK = "_llm_gym_parallelized"


def parallelize(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    *,
    world: World,
    param_dtype: torch.dtype = torch.float32,
    reduce_dtype: torch.dtype = torch.float32,
    activation_checkpointing: ActivationCheckpointing = "none",
    compile: bool = False,
) -> nn.Module:
    """Apply activation checkpointing, compile and FSDP2 to ``model`` in place; return it.

    ``blocks`` are the model's repeated layers (e.g. GPT-2's ``transformer.h``), each a
    unit of checkpointing, compilation and sharding. ``activation_checkpointing`` is
    ``"none"``, ``"full"`` (every block) or ``k`` (every k-th block: blocks k, 2k, ...,
    1-based), trading compute for activation memory. Parameters stay fp32 in the
    sharded master copy; ``param_dtype`` is what forward/backward compute in and
    ``reduce_dtype`` what gradients are averaged in. The blocks and the root shard over
    ``world.mesh`` (runner/mesh.py: FSDP2 over one dimension, HSDP over two); a world
    without one shards over every rank.

    The model must already sit on ``world.device`` with identical values on every rank.
    With a ``tp`` mesh dimension above 1 it must declare a tensor-parallel plan.
    """
    if any(getattr(block, _MARK, False) for block in blocks):
        raise RuntimeError("parallelize() was already applied to these blocks")
    world = with_mesh(world)
    plan = plan_for_degree(model, tp_size(world))
    if plan is not None:
        apply_tensor_parallel(model, list(blocks), plan, world.mesh["tp"])
    for index in _checkpointed_indices(len(blocks), activation_checkpointing):
        _checkpoint_forward(blocks[index])
    if compile:
        for block in blocks:
            # Instance attribute, not module.compile(): FSDP's hooks must stay eager.
            block.forward = torch.compile(block.forward)
    for block in blocks:
        setattr(block, _MARK, True)

    data_parallel = world.world_size // tp_size(world)
    if data_parallel == 1 and param_dtype == reduce_dtype == torch.float32:
        # Sharding over one rank shards nothing and casts nothing: FSDP's all-gathers would
        # only copy, measured at ~15% of a small model's step on CPU. Skip the wrapper.
        return model
    _check_one_group_per_parameter(model, blocks)
    mesh = shard_mesh(world.mesh)
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    # A fused projection cut part by part (tensor parallel) shards along its other dim.
    placement = strided_shard_placement if plan is not None else None
    for index, block in enumerate(blocks):
        # The last block's parameters are needed again at the start of backward; keeping
        # them gathered saves one all-gather per step.
        last = index == len(blocks) - 1
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=not last,
                    shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, mp_policy=policy, shard_placement_fn=placement)
    return model


def _check_one_group_per_parameter(model: nn.Module, blocks: Sequence[nn.Module]) -> None:
    """FSDP2 shards each block as one group and the root as another, so a parameter
    used in two of them (cross-layer weight sharing) cannot be sharded. Recent torch
    releases refuse it at the first forward; older ones do not, so check here, for every
    release, before anything is sharded."""
    module_names = {id(m): name for name, m in model.named_modules()}
    block_names = [module_names[id(b)] for b in blocks]
    groups: dict[int, dict[str, str]] = {}  # parameter -> {group: one name of it there}
    for name, module in model.named_modules(remove_duplicate=False):
        group = next((b for b in block_names if name == b or name.startswith(b + ".")),
                     "the root")
        for pname, param in module.named_parameters(recurse=False):
            groups.setdefault(id(param), {}).setdefault(group, f"{name}.{pname}".lstrip("."))
    for where in groups.values():
        if len(where) > 1:
            uses = ", ".join(f"'{n}' (in {g})" for g, n in where.items())
            raise UserError(
                f"one parameter is used in more than one FSDP group: {uses}. FSDP2 shards "
                "each block, and the root, as a group of its own, and a parameter can "
                "belong to one only; give each block its own weights, or share them "
                "outside the blocks"
            )


def _checkpointed_indices(num_blocks: int, mode: ActivationCheckpointing) -> list[int]:
    if mode == "none":
        return []
    if mode == "full":
        return list(range(num_blocks))
    if isinstance(mode, bool) or not isinstance(mode, int) or mode < 1:
        raise ValueError(
            f"activation_checkpointing must be 'none', 'full' or a positive int, got {mode!r}"
        )
    return [i for i in range(num_blocks) if (i + 1) % mode == 0]


def _checkpoint_forward(block: nn.Module) -> None:
    # Non-reentrant checkpointing: it supports kwargs, inputs that do not require grad,
    # and torch.compile; it also restores the RNG state so dropout recomputes identically.
    block.forward = functools.partial(_run_checkpointed, block.forward)


def _run_checkpointed(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parallelize_as_configured(
    model: nn.Module, settings: Any, world: World, *, compile: bool | None = None
) -> nn.Module:
    """``parallelize`` with what a recipe's ``trainer`` section asks for; the model's
    ``blocks`` (``llm_gym.model_contract``) are the units. ``compile`` overrides the
    settings (the dry run traces eagerly). A model that breaks the contract is refused.
    A world without a mesh gets the one ``trainer.parallel`` describes."""
    return parallelize(
        model,
        list(as_language_model(model).blocks),
        world=with_mesh(world, settings.parallel),
        param_dtype=PRECISIONS[settings.param_dtype],
        reduce_dtype=PRECISIONS[settings.reduce_dtype],
        activation_checkpointing=settings.activation_checkpointing,
        compile=settings.compile if compile is None else compile,
    )


def clip_grad_norm_(
    parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0
) -> torch.Tensor:
    """Scale gradients so their global norm is at most ``max_norm``; return the norm before.

    With FSDP2 each rank holds a shard of every gradient; the norm of the local shards is
    not the model's gradient norm. Computed on the DTensor gradients, the norm reduces
    across shards; ``full_tensor()`` makes it a plain tensor (and would all-reduce if
    it were still a partial sum), so every rank clips by the same factor and returns
    the same, global, number. May return inf/nan: callers decide whether to skip the
    step. The norm stays a 0-dim tensor on the gradients' device, so clipping reads
    nothing back to the host.
    """
    parameters = list(parameters)
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros((), device=parameters[0].device if parameters else None)
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, norm_type=norm_type)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
