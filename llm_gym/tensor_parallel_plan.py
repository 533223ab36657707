"""How a model declares that it can be split by tensor parallelism: which of its layers
are cut how, in words the runner turns into DTensor sharding (``runner/tensor_parallel.py``).

The model only names its layers and their roles; it imports nothing of
``torch.distributed``, so model code stays free of parallelism (the runner applies the
plan from outside, as it does FSDP). The roles follow Megatron-LM's split with sequence
parallelism: between the blocks' matmuls the activations are cut along the sequence, so
norms and dropout work on a 1/tp share; each attention or MLP gathers the sequence, runs
on its share of heads or hidden units, and scatters the sum back.

Roles:

- ``vocab_embedding``: the token embedding, its rows (the vocabulary) cut across ranks;
  its output is cut along the sequence;
- ``replicate``: a layer every rank holds whole (GPT-2's position embedding), whose
  gradient is summed where its output meets sharded activations;
- ``norm``: a norm between blocks' matmuls, run on the rank's part of the sequence;
- ``gather_sequence``: the attention or MLP module itself: its first input is gathered
  along the sequence, and it then sees plain tensors of its own heads or units;
- ``colwise``: a projection whose output features (heads, hidden units) are cut;
- ``rowwise``: the projection back, whose input features are cut and whose partial
  sums are reduce-scattered along the sequence;
- ``head_norm``: a per-head norm inside attention (QK-norm), its input cut by heads;
- ``head``: the output projection to the vocabulary, cut by vocabulary; the loss can
  then run on the cut logits (loss parallel) instead of gathering them.

``fused`` names colwise layers that hold several projections stacked along their output
(GPT-2's ``c_attn`` is q, k and v): each is cut separately, so a rank holds whole heads
of each, and the stored weight keeps its unsharded layout. ``divides`` names the sizes
the tensor-parallel degree must divide (heads, key/value heads), ``tied`` the parameters
that are one parameter in the model (a head tied to the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("vocab_embedding", "replicate", "norm", "gather_sequence", "colwise", "rowwise",
         "head_norm", "head")


@dataclass(frozen=True)
class TensorParallelPlan:
    """A model's tensor-parallel layout: roles of the layers outside the blocks (paths
    from the model) and inside every block (paths from the block)."""

    root: dict[str, str]
    block: dict[str, str]
    fused: dict[str, int] = field(default_factory=dict)  # block path -> parts stacked
    divides: dict[str, int] = field(default_factory=dict)  # e.g. {"n_head": 12}
    tied: tuple[tuple[str, str], ...] = ()  # (parameter path, the path it is tied to)

    def __post_init__(self) -> None:
        for where, layers in (("root", self.root), ("block", self.block)):
            for path, role in layers.items():
                if role not in ROLES:
                    raise ValueError(f"tensor-parallel plan: {where} layer {path!r} has "
                                     f"role {role!r}; the roles are {', '.join(ROLES)}")
        for path, parts in self.fused.items():
            if self.block.get(path) != "colwise" or parts < 2:
                raise ValueError(f"tensor-parallel plan: fused layer {path!r} must be a "
                                 "colwise block layer of 2 or more parts")

    def degree_problems(self, degree: int) -> list[str]:
        """What a tensor-parallel degree breaks: each size it does not divide, in words."""
        return [f"{name} = {size} is not divisible by {degree}"
                for name, size in self.divides.items() if size % degree]

    def degrees_that_fit(self, limit: int) -> list[int]:
        """The degrees from 1 to ``limit`` that divide every size in ``divides``."""
        return [d for d in range(1, limit + 1) if not self.degree_problems(d)]
