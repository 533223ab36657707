"""How one optimizer step's batch splits across ranks and micro-batches.

Without ``trainer.global_batch_size`` (or ``global_batch_tokens``) the recipe fixes the
per-rank shape, so the global batch grows with the world: ``micro_batch_size x
grad_accumulation x ranks`` sequences. With it, the global batch is the fixed quantity and
gradient accumulation is derived from the world size: 1, 2 and 4 data-parallel ranks then
see the same samples per step (the datasets stride their sequence across ranks) and train
alike, which is what lets a checkpoint resume on another world size.

One function decides it for the launcher (before any worker starts), the trainer and the
planner, so a size that does not divide is refused the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from llm_gym.errors import UserError


class BatchSettings(Protocol):
    """The ``trainer`` settings the layout reads (runner/settings.py's TrainerSettings)."""

    seq_len: int
    micro_batch_size: int
    grad_accumulation: int
    global_batch_size: int | None
    global_batch_tokens: int | None


@dataclass(frozen=True)
class BatchLayout:
    micro_batch_size: int  # sequences per rank per forward pass
    grad_accumulation: int  # micro-batches per optimizer step
    data_parallel: int  # ranks that each read their own share of the batch

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step, all ranks together."""
        return self.micro_batch_size * self.grad_accumulation * self.data_parallel


def fixed_global_batch(settings: BatchSettings) -> int | None:
    """The recipe's fixed global batch in sequences, or None when it follows the world."""
    if settings.global_batch_tokens is not None:
        return settings.global_batch_tokens // settings.seq_len
    return settings.global_batch_size


def batch_layout(settings: BatchSettings, data_parallel: int) -> BatchLayout:
    """The layout of a step on ``data_parallel`` ranks; a fixed global batch that does not
    split into whole micro-batches on every rank is a UserError naming the nearest sizes
    that do (and the world sizes that would take this one)."""
    fixed = fixed_global_batch(settings)
    micro = settings.micro_batch_size
    if fixed is None:
        return BatchLayout(micro, settings.grad_accumulation, data_parallel)
    per_round = micro * data_parallel  # sequences of one micro-batch on every rank
    if fixed % per_round == 0:
        return BatchLayout(micro, fixed // per_round, data_parallel)
    key, unit, scale = ("global_batch_tokens", "tokens", settings.seq_len) \
        if settings.global_batch_tokens is not None else ("global_batch_size", "sequences", 1)
    below = (fixed // per_round) * per_round
    nearest = [n * scale for n in (below, below + per_round) if n > 0]
    worlds = [w for w in range(1, 2 * data_parallel + 1) if fixed % (micro * w) == 0]
    raise UserError(
        f"trainer.{key}: {fixed * scale} {unit} do not split into micro-batches of "
        f"{micro} sequences on {data_parallel} rank{'s' if data_parallel > 1 else ''} "
        f"({per_round * scale} {unit} a round); the nearest that do: "
        f"{' or '.join(str(n) for n in nearest)}"
        + (f"; this size fits {', '.join(map(str, worlds))} ranks" if worlds else "")
        + " (or change trainer.micro_batch_size)")
