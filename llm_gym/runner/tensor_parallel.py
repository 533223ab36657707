"""Tensor parallelism with sequence parallelism: a model's declared plan
(``llm_gym/tensor_parallel_plan.py``) applied with DTensor over the mesh's ``tp`` dimension.

Each role of the plan becomes a DTensor parallel style. Between the blocks' matmuls the
activations are DTensors cut along the sequence (``Shard(1)``), so the residual stream,
the norms and dropout hold 1/tp of the tokens; an attention or MLP module gathers the
sequence on entry and sees plain tensors of its own heads or units inside, so the model's
attention code is the same as on one rank; the projection back reduce-scatters its
partial sums along the sequence again. The head's logits stay cut by vocabulary while the
trainer's loss runs under :func:`vocab_parallel_loss` (torch's loss parallel); any other
caller (evaluation, sampling) gets the whole logits.

A fused projection (GPT-2's ``c_attn``: q, k and v stacked) is cut part by part: its
weight's placement is ``_StridedShard(0, parts)``, so each rank holds the same heads of
each part and the weight keeps its unsharded layout. Checkpoints write such a parameter
as its runs of rows (runner/checkpoint_layout.py), so a checkpoint does not depend on the
tensor-parallel degree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    SequenceParallel,
    loss_parallel,
    parallelize_module,
)
from torch.distributed.tensor.placement_types import _StridedShard

from llm_gym.errors import UserError
from llm_gym.model_contract import build_on_meta, declares_tensor_parallel_plan
from llm_gym.tensor_parallel_plan import TensorParallelPlan

# True inside vocab_parallel_loss(): the head returns logits cut by vocabulary.
_vocab_parallel_logits = False


def plan_for_degree(model: nn.Module, degree: int) -> TensorParallelPlan | None:
    """The model's plan when ``degree`` > 1 (None at 1); a UserError naming
    ``trainer.parallel.tp`` for a model without a plan or a degree that does not fit."""
    if degree == 1:
        return None
    name = type(model).__name__
    if not declares_tensor_parallel_plan(model):
        raise UserError(f"trainer.parallel.tp: {degree} asks for tensor parallelism, but "
                        f"model {name} declares no tensor_parallel_plan() (the model "
                        "contract's optional part); use tp: 1, or give the model a plan")
    plan: TensorParallelPlan = model.tensor_parallel_plan()  # type: ignore[operator]
    problems = plan.degree_problems(degree)
    if problems:
        fits = ", ".join(map(str, plan.degrees_that_fit(max(plan.divides.values()))))
        raise UserError(f"trainer.parallel.tp: {degree} does not fit model {name}: "
                        f"{'; '.join(problems)}; it can be {fits}")
    return plan


def check_recipe_degree(registry: Any, recipe: Any, degree: int) -> None:
    """:func:`plan_for_degree` for a recipe's model, built on the meta device (no
    storage), so a misfit is refused before any worker starts."""
    plan_for_degree(build_on_meta(registry, recipe), degree)


def loss_takes_vocab_parallel(loss_fn: Any, degree: int) -> bool:
    """True where the model is cut (``degree`` > 1) and the loss declares it takes logits
    cut by vocabulary (a ``vocab_parallel`` attribute): the train step, and the dry run
    that traces it, then run it under :func:`vocab_parallel_loss`."""
    return degree > 1 and getattr(loss_fn, "vocab_parallel", False)


def apply_tensor_parallel(model: nn.Module, blocks: list[nn.Module], plan: TensorParallelPlan,
                          tp_mesh: DeviceMesh) -> None:
    """Cut ``model`` in place over ``tp_mesh`` as ``plan`` says; tied parameters stay one."""
    for block in blocks:
        parallelize_module(block, tp_mesh, _styles(plan.block, plan.fused))
    parallelize_module(model, tp_mesh, _styles(plan.root, {}))
    for path, same_as in plan.tied:
        owner, _, attr = path.rpartition(".")
        setattr(model.get_submodule(owner), attr, model.get_parameter(same_as))
    left = [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]
    if left:
        raise UserError(f"the tensor-parallel plan of {type(model).__name__} leaves "
                        f"{', '.join(left)} outside it; every parameter needs a role")


def strided_shard_placement(param: nn.Parameter) -> Shard | None:
    """``fully_shard``'s placement for a parameter: a fused projection's weight (cut part
    by part along dim 0 by tensor parallelism) shards along dim 1, so the two cuts do not
    interleave; None (FSDP's default, dim 0) for every other, a fused bias included."""
    if param.ndim > 1 and isinstance(param, DTensor) and any(
            isinstance(p, _StridedShard) for p in param.placements):
        return Shard(1)
    return None


@contextmanager
def vocab_parallel_loss(enabled: bool = True) -> Iterator[None]:
    """Within: the head's logits stay cut by vocabulary and cross-entropy runs on the cut
    logits (torch's loss parallel); the loss's backward must run within too."""
    global _vocab_parallel_logits
    if not enabled:
        yield
        return
    previous, _vocab_parallel_logits = _vocab_parallel_logits, True
    try:
        with loss_parallel():
            yield
    finally:
        _vocab_parallel_logits = previous


def _styles(layers: dict[str, str], fused: dict[str, int]) -> dict[str, ParallelStyle]:
    # Inner layers first: a style that wraps a module must find its children cut already.
    ordered = sorted(layers, key=lambda path: -path.count("."))
    return {path: _style(layers[path], fused.get(path, 1)) for path in ordered}


def _style(role: str, parts: int) -> ParallelStyle:
    if role == "vocab_embedding":
        return RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1),
                               use_local_output=False)
    if role == "replicate":
        return _Replicated()
    if role == "norm":
        return SequenceParallel()
    if role == "gather_sequence":
        return _GatherSequence()
    if role == "colwise":
        return _FusedColwise(parts) if parts > 1 else ColwiseParallel()
    if role == "rowwise":
        return RowwiseParallel(output_layouts=Shard(1), use_local_output=False)
    if role == "head_norm":
        return _HeadNorm()
    if role == "head":
        return _Head()
    raise ValueError(f"unknown tensor-parallel role {role!r}")


def _replicate_parameters(name: str, module: nn.Module, mesh: DeviceMesh) -> None:
    for pname, param in list(module.named_parameters(recurse=False)):
        if not isinstance(param, DTensor):
            module.register_parameter(pname, nn.Parameter(
                distribute_tensor(param, mesh, [Replicate()]), param.requires_grad))


class _Replicated(ParallelStyle):
    """Whole on every rank; tensor inputs become replicated DTensors, so the output meets
    the sharded activations as a DTensor (and its gradient is summed there)."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def inputs(mod: nn.Module, args: tuple, mesh: DeviceMesh) -> tuple:
            return tuple(DTensor.from_local(a, mesh, [Replicate()], run_check=False)
                         if not isinstance(a, DTensor) and hasattr(a, "dim") else a
                         for a in args)
        return distribute_module(module, device_mesh, _replicate_parameters, inputs)


class _GatherSequence(ParallelStyle):
    """An attention or MLP module: its first input, cut along the sequence, is gathered
    whole and handed over as a plain tensor; the other inputs pass untouched."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def gather(mod: nn.Module, args: tuple) -> tuple:
            first = args[0]
            if isinstance(first, DTensor):
                first = first.redistribute(placements=[Replicate()]).to_local()
            return (first, *args[1:])
        module.register_forward_pre_hook(gather)
        return module


class _FusedColwise(ColwiseParallel):
    """Colwise for ``parts`` projections stacked along the output: each part is cut into
    the same heads, and the output is this rank's share of every part, in order."""

    def __init__(self, parts: int) -> None:
        super().__init__()
        self.parts = parts

    def _partition_linear_fn(self, name: str, module: nn.Module, device_mesh: DeviceMesh) -> None:
        placement = _StridedShard(0, split_factor=self.parts)
        for pname, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(pname, nn.Parameter(
                distribute_tensor(param, device_mesh, [placement]), param.requires_grad))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def local(mod: nn.Module, outputs: DTensor, mesh: DeviceMesh) -> Any:
            return outputs.to_local()  # [q_r, k_r, v_r]: no redistribution
        return distribute_module(
            module, device_mesh, self._partition_linear_fn,
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            local)


class _HeadNorm(ParallelStyle):
    """A per-head norm inside attention: its input is this rank's heads (dim -2), its
    weight whole on every rank, its gradient summed over the ranks' heads."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def inputs(mod: nn.Module, args: tuple, mesh: DeviceMesh) -> tuple:
            return (DTensor.from_local(args[0], mesh, [Shard(args[0].dim() - 2)],
                                       run_check=False), *args[1:])

        def outputs(mod: nn.Module, out: DTensor, mesh: DeviceMesh) -> Any:
            return out.to_local()
        return distribute_module(module, device_mesh, _replicate_parameters, inputs, outputs)


class _Head(ColwiseParallel):
    """The output projection, cut by vocabulary: its logits stay cut inside
    :func:`vocab_parallel_loss`, and are gathered whole for every other caller."""

    def __init__(self) -> None:
        super().__init__(input_layouts=Shard(1), output_layouts=Shard(-1),
                         use_local_output=False)

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def logits(mod: nn.Module, out: DTensor, mesh: DeviceMesh) -> Any:
            if _vocab_parallel_logits:
                return out
            return out.redistribute(placements=[Replicate()]).to_local()
        return distribute_module(
            module, device_mesh, self._partition_linear_fn,
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            logits)
