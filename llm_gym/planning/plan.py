"""A recipe at a given scale: memory per GPU, FLOPs, step time, communication, a verdict.

The model is built on the meta device (shapes only, nothing allocated) through the same
registry call the runner uses; everything else is arithmetic (``memory``). What
``recipe plan`` prints comes from here; ``report`` only formats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llm_gym.config.recipe_model import RecipeBase
from llm_gym.errors import UserError
from llm_gym.model_contract import (
    LanguageModel,
    as_language_model,
    build_on_meta,
    declares_tensor_parallel_plan,
)
from llm_gym.planning.memory import (
    Comm,
    Memory,
    ModelShape,
    OptimizerLayout,
    Setup,
    checkpointed_blocks,
    communication,
    memory,
)
from llm_gym.registry import ResolverRegistry
from llm_gym.runner.batch_layout import batch_layout, fixed_global_batch
from llm_gym.runner.distributed import World
from llm_gym.runner.flops import gpu_spec
from llm_gym.runner.mesh import mesh_shape
from llm_gym.runner.parallelize import PRECISIONS
from llm_gym.runner.tensor_parallel import plan_for_degree

# Peak memory up to this share of the GPU fits; the rest goes to the CUDA context, NCCL
# buffers and the caching allocator's fragmentation.
USABLE = 0.9


@dataclass(frozen=True)
class Plan:
    label: str
    shape: ModelShape
    setup: Setup
    optimizer: OptimizerLayout
    nodes: int
    gpus_per_node: int
    gpu: str
    gpu_peak_flops: float  # dense tensor-core rate per GPU (bf16; fp16 on a V100)
    gpu_bytes: int
    mfu: float
    max_steps: int
    warnings: tuple[str, ...] = field(default=())
    # trainer.global_batch_size/_tokens: accumulation follows the ranks, the batch does not
    fixed_batch: bool = False
    async_checkpoint: bool = False  # trainer.async_checkpoint: a host copy of the states

    def checkpoint_host_bytes(self) -> int:
        """Host memory per rank that a background checkpoint's copy takes (its sharded
        parameters and optimizer state; 0 without trainer.async_checkpoint)."""
        if not self.async_checkpoint:
            return 0
        m = self.memory()
        return m.params + m.optimizer

    def memory(self, setup: Setup | None = None) -> Memory:
        return memory(self.shape, setup or self.setup, self.optimizer)

    def fits(self, setup: Setup | None = None) -> bool:
        return self.memory(setup).peak <= USABLE * self.gpu_bytes

    @property
    def comm(self) -> Comm:
        return communication(self.shape, self.setup)

    @property
    def tokens_per_step(self) -> int:
        s = self.setup
        return s.micro_batch_size * s.seq_len * s.grad_accumulation * s.data_parallel

    @property
    def model_flops_per_step(self) -> int:
        return self.shape.flops_per_token * self.tokens_per_step

    @property
    def hardware_flops_per_step(self) -> int:
        """Model FLOPs plus the forward that activation checkpointing re-runs."""
        ckpt = checkpointed_blocks(self.shape, self.setup.activation_checkpointing)
        return self.model_flops_per_step + (
            ckpt * self.shape.recompute_flops_per_token * self.tokens_per_step
        )

    @property
    def step_seconds(self) -> float:
        # MFU counts model FLOPs only, so recomputation shows up as a lower MFU.
        return self.model_flops_per_step / (self.setup.ranks * self.gpu_peak_flops * self.mfu)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.step_seconds


def make_plan(
    recipe: RecipeBase,
    *,
    label: str,
    nodes: int,
    gpus_per_node: int,
    gpu: str = "h100",
    mfu: float = 0.4,
    registry: ResolverRegistry | None = None,
) -> Plan:
    """The plan of ``recipe`` on ``nodes`` x ``gpus_per_node`` GPUs named ``gpu``."""
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    registry = registry or ResolverRegistry.from_installed_plugins()
    name, peak, gpu_bytes = gpu_spec(gpu)
    s, entries = recipe.trainer, recipe.components()
    model = build_on_meta(registry, recipe)
    shape = model_shape(model, s.seq_len, entries["model"].type_hint.name)
    ranks = nodes * gpus_per_node
    mesh = mesh_shape(s.parallel, ranks)  # refuses a split that misfits
    plan_for_degree(model, mesh.tp)  # and a model that has no plan for its tp, or misfits
    setup = Setup(
        ranks=ranks,
        replicas=mesh.dp_replicate,
        tp=mesh.tp,
        micro_batch_size=s.micro_batch_size,
        seq_len=s.seq_len,
        # A fixed global batch: the accumulation this many ranks need (runner/batch_layout).
        grad_accumulation=batch_layout(s, mesh.dp_size).grad_accumulation,
        param_dtype=s.param_dtype,
        reduce_dtype=s.reduce_dtype,
        activation_checkpointing=s.activation_checkpointing,
    )
    warnings = []
    if not shape.blocks:
        warnings.append("the model lists no `blocks`: FSDP2 shards it as one group and "
                        "gathers every parameter at once")
    elif s.activation_checkpointing not in ("none", "full") and not checkpointed_blocks(
        shape, s.activation_checkpointing
    ):
        warnings.append(f"activation_checkpointing={s.activation_checkpointing} checkpoints "
                        f"none of the {len(shape.blocks)} blocks")
    optimizer = optimizer_layout(registry, recipe) if "optimizer" in entries else (
        OptimizerLayout("none", 0, 0, 0))
    return Plan(label, shape, setup, optimizer, nodes, gpus_per_node, name, peak, gpu_bytes,
                mfu, s.max_steps, tuple(warnings), fixed_global_batch(s) is not None,
                s.async_checkpoint)


def model_shape(model: nn.Module, seq_len: int, name: str) -> ModelShape:
    """Read what a plan needs off a (meta) model: its FSDP groups, and its FLOPs and saved
    activations as the model declares them (``llm_gym.model_contract``)."""
    declared = as_language_model(model, name)
    blocks = list(declared.blocks)
    owned = {id(p) for block in blocks for p in block.parameters()}
    # parameters() yields a tied weight once, as FSDP shards it once.
    root = tuple(tuple(p.shape) for p in model.parameters() if id(p) not in owned)
    block_shapes = tuple(tuple(tuple(p.shape) for p in b.parameters()) for b in blocks)
    return ModelShape(
        name=name,
        root=root,
        blocks=block_shapes,
        master_bytes=max((p.element_size() for p in model.parameters()), default=4),
        vocab_size=declared.vocab_size,
        block_saved={k: declared.block_activation_bytes(d, checkpointed=False)
                     for k, d in PRECISIONS.items()},
        checkpointed_block_saved={k: declared.block_activation_bytes(d, checkpointed=True)
                                  for k, d in PRECISIONS.items()},
        root_saved={k: declared.root_activation_bytes(d) for k, d in PRECISIONS.items()},
        flops_per_token=int(declared.flops_per_token(seq_len)),
        recompute_flops_per_token=_recompute_flops(declared, blocks, seq_len),
        **_tensor_parallel_cuts(model, blocks, owned),
    )


# The dimension of a parameter that each role of a tensor-parallel plan cuts.
_CUT_BY_ROLE = {"vocab_embedding": {"weight": 0}, "colwise": {"weight": 0, "bias": 0},
                "rowwise": {"weight": 1}, "head": {"weight": 0}}


def _tensor_parallel_cuts(model: nn.Module, blocks: list[nn.Module],
                          owned: set[int]) -> dict[str, Any]:
    """``width``, ``root_cut`` and ``blocks_cut`` of a model with a tensor-parallel plan
    (llm_gym/tensor_parallel_plan.py), in the order of ``model_shape``'s shapes."""
    if not declares_tensor_parallel_plan(model):
        return {}
    plan = model.tensor_parallel_plan()  # type: ignore[operator]

    def cuts(owner: nn.Module, roles: dict[str, str]) -> dict[int, int]:
        found = {}
        for path, role in roles.items():
            for pname, param in owner.get_submodule(path).named_parameters(recurse=False):
                if pname in _CUT_BY_ROLE.get(role, {}):
                    found[id(param)] = _CUT_BY_ROLE[role][pname]
        return found

    root = cuts(model, plan.root)
    width = next((p.shape[1] for path, role in plan.root.items() if role == "vocab_embedding"
                  for p in model.get_submodule(path).parameters()), 0)
    blocks_cut = []
    for block in blocks:
        inside = cuts(block, plan.block)
        blocks_cut.append(tuple(inside.get(id(p)) for p in block.parameters()))
    return {"width": width,
            "root_cut": tuple(root.get(id(p)) for p in model.parameters() if id(p) not in owned),
            "blocks_cut": tuple(blocks_cut)}


def _recompute_flops(model: LanguageModel, blocks: list[nn.Module], seq_len: int) -> int:
    """FLOPs per token of re-running one checkpointed block's forward in backward.

    PyTorch stops recomputing once every tensor backward needs is back, so the block's
    last projection (whose output nobody saved) is not re-run; attention's matmuls are.
    Those are what the model's FLOPs grow by with the sequence length: a third of that
    growth (forward of forward + backward), shared by the blocks.
    """
    if not blocks:
        return 0
    linears = [m for m in blocks[0].modules() if isinstance(m, nn.Linear)]
    weights = sum(m.weight.numel() for m in linears[:-1])
    attention = (model.flops_per_token(seq_len) - model.flops_per_token(0)) // (3 * len(blocks))
    return 2 * weights + attention


def optimizer_layout(registry: ResolverRegistry, recipe: RecipeBase) -> OptimizerLayout:
    """Measure the recipe's optimizer state per parameter: build it for a tiny Linear,
    take one step and look at what it keeps (any registered optimizer, no table)."""
    choice = recipe.components()["optimizer"]
    dummy = nn.Linear(3, 2)
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    built = registry.build_components(
        {"optimizer": choice}, extra_kwargs={"model": dummy, "trainer": recipe.trainer,
                                             "world": world})
    optimizer = built["optimizer"]
    for p in dummy.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    states = per_element = per_tensor = 0
    for value in optimizer.state[dummy.weight].values():
        if not isinstance(value, torch.Tensor):
            continue
        if value.shape == dummy.weight.shape:
            states += 1
            per_element += math.ceil(value.nbytes / dummy.weight.numel())
        else:
            per_tensor += value.nbytes
    return OptimizerLayout(choice.type_hint.name, states, per_element, per_tensor)


def alternatives(plan: Plan) -> list[tuple[str, Memory, str]]:
    """Changes that make a plan fit, cheapest first: ``(overrides or flags, memory, note)``.

    Memory falls with activation checkpointing (activations), a smaller micro-batch
    (with more accumulation to keep the tokens per step) and more GPUs (states).
    """
    s, found = plan.setup, []
    if s.activation_checkpointing != "full":
        full = s.with_(activation_checkpointing="full")
        if plan.fits(full):
            found.append(("trainer.activation_checkpointing=full", plan.memory(full),
                          "re-runs each block's forward in backward: ~30% more compute"))
    for ac in dict.fromkeys([s.activation_checkpointing, "full"]):
        smaller = _smaller_micro_batch(plan, s.with_(activation_checkpointing=ac))
        if smaller is not None:
            change = f"trainer.micro_batch_size={smaller.micro_batch_size}"
            if not plan.fixed_batch:  # a fixed global batch derives the accumulation
                change += f" trainer.grad_accumulation={smaller.grad_accumulation}"
            if ac != s.activation_checkpointing:
                change += f" trainer.activation_checkpointing={ac}"
            found.append((change, plan.memory(smaller), "same tokens per step"))
            break
    for nodes in range(plan.nodes + 1, 64 * plan.nodes + 1):
        more = s.with_(ranks=nodes * plan.gpus_per_node)
        if more.ranks % (s.replicas * s.tp):  # HSDP keeps its copies, TP its degree
            continue
        if plan.fits(more):
            grows = ("the global batch stays fixed" if plan.fixed_batch
                     else "tokens per step grow with the ranks")
            found.append((f"--nodes {nodes}", plan.memory(more),
                          f"{more.ranks} GPUs: states shard further; {grows}"))
            break
    return found


def _smaller_micro_batch(plan: Plan, setup: Setup) -> Setup | None:
    """The largest halved micro-batch that fits, accumulating more to keep the tokens."""
    sequences = setup.micro_batch_size * setup.grad_accumulation
    mbs = setup.micro_batch_size // 2
    while mbs >= 1:
        smaller = setup.with_(micro_batch_size=mbs, grad_accumulation=math.ceil(sequences / mbs))
        if plan.fits(smaller):
            return smaller
        mbs //= 2
    return None
