"""Bytes per rank of an FSDP2 run, from a model's shapes alone (no tensors, no torch calls).

Everything is counted for rank 0, which holds the largest shard: FSDP2 splits each
parameter along dim 0 into ``ceil(dim0 / ranks)`` rows per rank (padding the last).
The model's layout is the one ``llm_gym.runner.parallelize`` makes: one FSDP group per
transformer block, one for the root (embeddings, final norm, tied head); every block but
the last re-shards after forward; the root keeps its parameters through backward.

Tensor parallelism (``trainer.parallel.tp``) first cuts each parameter its plan cuts
(``ModelShape.root_cut``/``blocks_cut``: the dimension, or None for a whole one) into tp
parts, and FSDP2 then shards those parts; activations, which sequence parallelism cuts
by the sequence between the matmuls and by heads or units within them, and the logits,
cut by vocabulary for the loss, are 1/tp of the whole (Korthikanti et al., 2022).

Activations are the model's own declaration (``llm_gym.model_contract``: bytes a block
saves per token, with and without checkpointing, and those of the layers outside the
blocks); the loss's are counted here. GPT-2's and Llama's (grouped-query attention,
qk_norm, tied or not) were checked against ``saved_tensors_hooks`` on the real models,
see tests/planning/test_agreement.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llm_gym.runner.parallelize import _checkpointed_indices

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
F32 = 4
INDEX = 8  # int64 token ids and targets

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelShape:
    """What a plan needs of a model: its FSDP groups and its transformer sizes."""

    name: str
    root: tuple[Shape, ...]  # parameters no block owns (the root FSDP group)
    blocks: tuple[tuple[Shape, ...], ...]  # each block's parameters
    master_bytes: int  # bytes per element of the parameters as built (fp32: 4)
    vocab_size: int
    # Saved for backward per token, as the model declares them, by compute dtype ("bf16"):
    block_saved: Mapping[str, int]  # by one block
    checkpointed_block_saved: Mapping[str, int]  # by one checkpointed block (its input)
    root_saved: Mapping[str, int]  # by the layers outside the blocks, the loss not included
    flops_per_token: int  # training FLOPs per token (forward + backward)
    recompute_flops_per_token: int  # one checkpointed block's re-run forward, per token
    width: int = 0  # the residual stream's width (what sequence parallelism gathers)
    # The dimension tensor parallelism cuts, per parameter (None: whole on every rank);
    # empty: the model declares no tensor-parallel plan.
    root_cut: tuple[int | None, ...] = ()
    blocks_cut: tuple[tuple[int | None, ...], ...] = ()

    @property
    def num_params(self) -> int:
        return numel(self.root) + sum(numel(b) for b in self.blocks)

    def cut(self, tp: int) -> ModelShape:
        """The shapes one tensor-parallel rank holds (the model itself at ``tp`` 1)."""
        if tp == 1:
            return self
        blocks = zip(self.blocks, self.blocks_cut, strict=True)
        return replace(self, root=_cut(self.root, self.root_cut, tp),
                       blocks=tuple(_cut(b, c, tp) for b, c in blocks))


def _cut(shapes: tuple[Shape, ...], dims: tuple[int | None, ...], tp: int) -> tuple[Shape, ...]:
    return tuple(s if d is None else (*s[:d], -(-s[d] // tp), *s[d + 1:])
                 for s, d in zip(shapes, dims, strict=True))


@dataclass(frozen=True)
class Setup:
    """How the model is trained: world size, batch and mixed-precision policy."""

    ranks: int
    micro_batch_size: int
    seq_len: int
    grad_accumulation: int
    param_dtype: str  # compute dtype of gathered parameters (FSDP's param_dtype)
    reduce_dtype: str  # gradient reduce-scatter dtype
    activation_checkpointing: str | int  # "none", "full" or every k-th block
    # trainer.parallel.dp_replicate: copies of the sharded model (HSDP when > 1); each
    # shards its parameters over ranks / (replicas x tp) ranks.
    replicas: int = 1
    tp: int = 1  # trainer.parallel.tp: ranks that split every layer

    @property
    def data_parallel(self) -> int:
        """Ranks that read their own share of the batch (a tensor-parallel group is one)."""
        return self.ranks // self.tp

    @property
    def shard_ranks(self) -> int:
        """Ranks one copy of the model is sharded over (all of them without HSDP)."""
        return self.data_parallel // self.replicas

    @property
    def sharded(self) -> bool:
        # parallelize() leaves one fp32 data-parallel rank unwrapped: no gathers, casts
        # or buffers.
        return not (self.data_parallel == 1 and self.param_dtype == self.reduce_dtype == "fp32")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.seq_len

    def with_(self, **changes: object) -> Setup:
        return replace(self, **changes)


@dataclass(frozen=True)
class OptimizerLayout:
    """Optimizer state per parameter, as measured on a stepped dummy (see plan.py)."""

    name: str
    states: int  # full-size state tensors per parameter (AdamW: 2)
    bytes_per_element: int  # their bytes per parameter element (AdamW fp32: 8)
    bytes_per_tensor: int  # small per-tensor state (AdamW's step: 4)


@dataclass(frozen=True)
class Memory:
    """Bytes on rank 0 at the peak of a step; ``peak`` adds up what is alive at once."""

    params: int  # sharded master parameters
    grads: int  # sharded gradients (dtype of the master parameters)
    optimizer: int
    gathered: int  # unsharded parameters in param_dtype: root + blocks in flight
    grad_buffers: int  # one block's unsharded grads + its reduce-scatter input
    accumulated: int  # unsharded grads kept across no-sync micro-batches
    activations: int  # saved for backward, one micro-batch
    working: int  # transient at the start of backward (loss) or recomputing a block

    @property
    def states(self) -> int:
        return self.params + self.grads + self.optimizer

    @property
    def peak(self) -> int:
        return (self.states + self.gathered + self.grad_buffers + self.accumulated
                + self.activations + self.working)


@dataclass(frozen=True)
class Comm:
    """Bytes each rank receives per optimizer step (ring collectives: (R-1)/R of the data),
    by mesh dimension: FSDP2's gathers and reduce-scatters over ``dp_shard``, HSDP's
    all-reduce over ``dp_replicate``, the activations' over ``tp``."""

    all_gather_forward: int
    all_gather_backward: int  # re-gathers of blocks that re-sharded after forward
    reduce_scatter: int
    # HSDP: the reduced gradient shards all-reduced across replicas (other nodes)
    all_reduce_replicas: int = 0
    # Sequence parallelism: activations gathered before and reduce-scattered after every
    # attention and MLP, forward and backward, within each tensor-parallel group
    tensor_parallel: int = 0

    @property
    def total(self) -> int:
        return (self.all_gather_forward + self.all_gather_backward + self.reduce_scatter
                + self.all_reduce_replicas + self.tensor_parallel)


def numel(shapes: tuple[Shape, ...]) -> int:
    return sum(math.prod(s) for s in shapes)


def shard_numel(shapes: tuple[Shape, ...], ranks: int) -> int:
    """Elements rank 0 holds: ``ceil(dim0 / ranks)`` rows of every parameter."""
    return sum(-(-s[0] // ranks) * math.prod(s[1:]) if s else 1 for s in shapes)


def padded_numel(shapes: tuple[Shape, ...], ranks: int) -> int:
    """Elements an all-gather or reduce-scatter moves: every shard padded to rank 0's."""
    return shard_numel(shapes, ranks) * ranks


def checkpointed_blocks(shape: ModelShape, mode: str | int) -> int:
    return len(_checkpointed_indices(len(shape.blocks), mode))


def root_activations(shape: ModelShape, setup: Setup) -> int:
    """Bytes the layers outside the blocks save, the loss included.

    The model's declared bytes per token, one int64 position row per micro-batch, the
    loss's fp32 log-probabilities (the logits are cast to fp32 and log-softmax keeps its
    output) and the int64 targets.
    """
    tokens = setup.tokens_per_micro_batch
    per_token = shape.root_saved[setup.param_dtype] + shape.vocab_size * F32 + INDEX
    return tokens * per_token + setup.seq_len * INDEX


def activations(shape: ModelShape, setup: Setup) -> int:
    """Saved-for-backward bytes of one micro-batch under the setup's checkpointing."""
    tokens, dtype = setup.tokens_per_micro_batch, setup.param_dtype
    ckpt = checkpointed_blocks(shape, setup.activation_checkpointing)
    # A checkpointed block keeps only its input; the rest is recomputed in backward.
    kept = ckpt * tokens * shape.checkpointed_block_saved[dtype]
    full = (len(shape.blocks) - ckpt) * tokens * shape.block_saved[dtype]
    return root_activations(shape, setup) + kept + full


def working_memory(shape: ModelShape, setup: Setup) -> int:
    """Transient bytes beyond the saved activations, the larger of two moments.

    Starting backward, the loss holds the gradients of the fp32 log-probabilities and
    of the fp32 logits, then their cast to the compute dtype: 8-10 bytes per vocabulary
    entry per token. With checkpointing, a block's recomputed activations are alive
    while its backward runs.
    """
    b = DTYPE_BYTES[setup.param_dtype]
    loss = setup.tokens_per_micro_batch * shape.vocab_size * (2 * F32 + (b if b < F32 else 0))
    recompute = 0
    if checkpointed_blocks(shape, setup.activation_checkpointing):
        recompute = setup.tokens_per_micro_batch * shape.block_saved[setup.param_dtype]
    return max(loss, recompute)


def memory(shape: ModelShape, setup: Setup, optimizer: OptimizerLayout) -> Memory:
    """Bytes per rank (rank 0) for one optimizer step of ``setup``; states are cut by
    tensor parallelism, then sharded over the ranks of one copy of the model
    (``setup.shard_ranks``)."""
    whole, shape = shape, shape.cut(setup.tp)
    r, pb = setup.shard_ranks, DTYPE_BYTES[setup.param_dtype]
    rb = DTYPE_BYTES[setup.reduce_dtype]
    groups = (shape.root, *shape.blocks)
    local = sum(shard_numel(g, r) for g in groups)
    tensors = sum(len(g) for g in groups)
    gathered = grad_buffers = accumulated = 0
    if setup.sharded:
        largest_block = max((numel(b) for b in shape.blocks), default=0)
        # The root stays gathered from forward to the end of backward; of the blocks, the
        # one computing and the one prefetched are gathered at any time.
        gathered = pb * (numel(shape.root) + min(2, len(shape.blocks)) * largest_block)
        # Backward: a block's unsharded gradients, then their copy in reduce_dtype that
        # the reduce-scatter reads.
        grad_buffers = (pb + rb) * largest_block
        if setup.grad_accumulation > 1:
            # Without gradient sync, FSDP2 keeps every unsharded gradient, in reduce_dtype,
            # until the last micro-batch reduce-scatters them.
            accumulated = shape.num_params * rb
    return Memory(
        params=local * shape.master_bytes,
        grads=local * shape.master_bytes,
        optimizer=local * optimizer.bytes_per_element + tensors * optimizer.bytes_per_tensor,
        gathered=gathered,
        grad_buffers=grad_buffers,
        accumulated=accumulated,
        activations=-(-activations(whole, setup) // setup.tp),
        working=-(-working_memory(whole, setup) // setup.tp),
    )


def communication(shape: ModelShape, setup: Setup) -> Comm:
    """Per-rank collective volume of one optimizer step (zero when nothing is sharded).

    Gathers and reduce-scatters run within one copy of the model (``shard_ranks``); with
    HSDP each rank's reduced gradient shard is then all-reduced across the copies (a ring
    all-reduce receives 2 (R-1)/R of the data)."""
    tp = tensor_parallel_bytes(shape, setup)
    if not setup.sharded or setup.data_parallel == 1:
        return Comm(0, 0, 0, 0, tp)
    shape = shape.cut(setup.tp)
    r, replicas = setup.shard_ranks, setup.replicas
    pb, rb = DTYPE_BYTES[setup.param_dtype], DTYPE_BYTES[setup.reduce_dtype]
    share = (r - 1) / r
    blocks = [padded_numel(b, r) for b in shape.blocks]
    every = padded_numel(shape.root, r) + sum(blocks)
    # Parameters are gathered for every micro-batch; gradients are reduced only on the
    # last one (the trainer turns gradient sync off for the others).
    forward = setup.grad_accumulation * every * pb * share
    backward = setup.grad_accumulation * sum(blocks[:-1]) * pb * share
    across = 2 * (replicas - 1) / replicas * (every // r) * rb
    return Comm(int(forward), int(backward), int(every * rb * share), int(across), tp)


def tensor_parallel_collectives(shape: ModelShape, setup: Setup) -> int:
    """Activation collectives per micro-batch: each block gathers the sequence before its
    attention and its MLP and reduce-scatters after each (4 forward, 4 backward; a
    checkpointed block's recomputation repeats its forward's); the embedding's output is
    reduce-scattered and the head's input gathered (2 forward, 2 backward)."""
    ckpt = checkpointed_blocks(shape, setup.activation_checkpointing)
    return 8 * len(shape.blocks) + 4 * ckpt + 4


def tensor_parallel_bytes(shape: ModelShape, setup: Setup) -> int:
    """Bytes each rank receives per step from the activations' collectives: every one
    moves (tp - 1) / tp of a micro-batch's [tokens, width] in the compute dtype."""
    if setup.tp == 1:
        return 0
    one = setup.tokens_per_micro_batch * shape.width * DTYPE_BYTES[setup.param_dtype]
    share = (setup.tp - 1) / setup.tp
    return int(setup.grad_accumulation * tensor_parallel_collectives(shape, setup) * one * share)
