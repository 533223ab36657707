"""Training samples from a pack: fixed-length token blocks, shuffled per epoch, sharded by rank.

The token stream (documents back to back, each ending with eod) is cut into blocks of
``seq_len + 1`` tokens; block ``b`` is ``tokens[b * seq_len : b * seq_len + seq_len + 1]``.
Consecutive blocks overlap by one token, the last target of one being the first input of
the next, so every token after the first is a target exactly once per epoch.

Splits: the last ``ceil(val_fraction * n_blocks)`` blocks form ``split="val"``, the rest
``split="train"``. They share one boundary token, which is a target only in train and
input-only context in val, so no validation target is ever trained on.

Epoch ``e`` visits the split's blocks in the order ``default_rng([seed, e]).permutation``
(val keeps file order unless ``shuffle=True``). The split's samples are numbered globally,
whatever the rank: sample ``j`` is block ``j % n_blocks`` of epoch ``j // n_blocks``'s
order, every block of every epoch, one epoch running straight into the next. Rank ``r``
of ``world_size`` reads every ``world_size``-th sample from ``cursor + r``, so the k-th
batches of all ranks together hold the samples of one process's k-th batch of
``world_size`` times the size. The cursor (global samples read by all ranks together) is
the whole state: the same on every rank, and independent of the world size, so a
checkpoint resumes exactly on the same or, with a fixed global batch, on another number
of ranks. A mixture (``llm_gym.data.indexed``) reads the same global samples.

Document boundaries (``document_boundaries=True``): each batch is a ``Batch`` of the
tokens and, for every input token, the index of its document within the row
(``llm_gym.data.document_ids``, from the pack's offsets index); off, a batch is the bare
token tensor, as it always was. A mixture asks for the same numbers per global sample
(``sample_document_ids``) whatever this flag says: it is the mixture's own flag that
counts there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from llm_gym.data.batch import Batch
from llm_gym.data.document_ids import block_document_ids, document_starts
from llm_gym.data.indexed import GlobalPosition
from llm_gym.data.packed import PackedTokens
from llm_gym.data.sharded_pack import block_rows
from llm_gym.errors import UserError

Split = Literal["train", "val"]
_INT64 = np.dtype(np.int64)


class PackedMemMapDataset(GlobalPosition):
    """Batches of ``[batch_size, seq_len + 1]`` int64 tokens from ``PREFIX.bin``/``.idx``.

    ``inputs, targets = batch[:, :-1], batch[:, 1:]``. Pass ``tokenizer_fingerprint`` to
    refuse a pack made with another tokenizer. With ``document_boundaries`` a batch is a
    ``Batch(tokens, document_ids)``.
    """

    def __init__(
        self,
        prefix: str | Path,
        seq_len: int,
        *,
        split: Split = "train",
        val_fraction: float = 0.0,
        shuffle: bool | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tokenizer_fingerprint: str | None = None,
        document_boundaries: bool = False,
    ) -> None:
        if seq_len < 1:
            raise UserError(f"seq_len must be >= 1, got {seq_len}")
        if split not in ("train", "val"):
            raise UserError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} outside world_size {world_size}")
        if seed < 0:
            raise UserError(f"seed must be >= 0, got {seed}")
        self._args = dict(
            prefix=prefix, seq_len=seq_len, split=split, val_fraction=val_fraction,
            shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
            tokenizer_fingerprint=tokenizer_fingerprint,
            document_boundaries=document_boundaries,
        )  # fmt: skip
        self.packed = PackedTokens.open(prefix)
        if tokenizer_fingerprint is not None:
            self.packed.check_tokenizer(tokenizer_fingerprint)
        self.seq_len, self.split, self.seed = seq_len, split, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle = (split == "train") if shuffle is None else shuffle

        total = max(self.packed.n_tokens - 1, 0) // seq_len
        n_val = math.ceil(total * val_fraction)
        first, count = (0, total - n_val) if split == "train" else (total - n_val, n_val)
        self.first_block, self.n_blocks = first, count
        if count == 0:
            raise UserError(
                f"{self.packed.bin_path}: the {split} split has 0 blocks of"
                f" {seq_len + 1} tokens ({self.packed.n_tokens} tokens, val_fraction"
                f" {val_fraction})"
            )
        self.cursor = 0  # global samples read so far by all ranks together
        self._epoch_orders: dict[int, np.ndarray] = {}  # the last epochs' full orders
        self._tokens, self._span = self.packed.tokens, seq_len + 1
        # Every block of the file as a row of one strided view (no copy): a batch is then a
        # gather of whole rows, each one memcpy, instead of an index per token. A sharded
        # pack's rows are gathered across its shards alike.
        self._rows = block_rows(self._tokens, total, seq_len, self._span)
        self.document_boundaries = document_boundaries
        # Read (and checked) at build when the batches carry them, on first use when only
        # a mixture asks.
        self._doc_starts = document_starts(self.packed) if document_boundaries else None

    def __len__(self) -> int:
        """Blocks per rank per epoch (rounded down)."""
        return self.n_blocks // self.world_size

    def _visiting_order(self, epoch: int) -> np.ndarray:
        """All the split's blocks (0-based within the split) in ``epoch``'s visiting order."""
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        return np.arange(self.n_blocks, dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """``_visiting_order`` as blocks of the file, kept for the global reads (every
        batch asks)."""
        order = self._epoch_orders.get(epoch)
        if order is None:
            order = self._visiting_order(epoch) + self.first_block
            # Two epochs: a batch that straddles a boundary asks for both, then moves on.
            self._epoch_orders = {e: o for e, o in self._epoch_orders.items() if e == epoch - 1}
            self._epoch_orders[epoch] = order
        return order

    @property
    def samples_per_epoch(self) -> int:
        """Blocks of the split in one epoch, all ranks together (``IndexedSamples``)."""
        return self.n_blocks

    def sample_tokens(self, samples: np.ndarray) -> np.ndarray:
        """Global samples ``samples`` as ``[len, seq_len + 1]`` tokens of the pack's dtype
        (``IndexedSamples``): sample ``j`` is block ``j % n_blocks`` of epoch
        ``j // n_blocks``, independent of this dataset's rank and position."""
        return self._rows[self.sample_rows(samples)]

    def sample_document_ids(self, samples: np.ndarray) -> np.ndarray:
        """For global samples ``samples``, each input token's document index within its
        block, ``[len, seq_len]`` int64 (``llm_gym.data.indexed.DocumentBoundaries``)."""
        return self.document_ids(self.sample_rows(samples))

    def document_ids(self, blocks: np.ndarray) -> np.ndarray:
        """``[len(blocks), seq_len]`` int64: the document index (0, 1, ... within the
        block) of every input token of the file's blocks ``blocks``."""
        if self._doc_starts is None:
            self._doc_starts = document_starts(self.packed)
        return block_document_ids(self._doc_starts, np.asarray(blocks) * self.seq_len,
                                  self.seq_len)

    @property
    def rows(self) -> Any:
        """Every block of the file as a row (``IndexedRows``): a strided view of one
        pack's tokens, or a gatherer of a sharded pack's."""
        return self._rows

    def sample_rows(self, samples: np.ndarray) -> np.ndarray:
        """The file's blocks (rows of ``rows``) of global samples ``samples``
        (``IndexedRows``)."""
        samples = np.asarray(samples, dtype=np.int64)
        if len(samples) == 0:
            return samples
        first, last = int(samples.min()) // self.n_blocks, int(samples.max()) // self.n_blocks
        if first == last:  # the usual case, kept to few array operations: a mixture's path
            # Less the epoch's start, not take(mode="wrap"): that divides every index.
            blocks = self._epoch_order(first).take(samples - first * self.n_blocks)
        else:
            epochs, positions = np.divmod(samples, self.n_blocks)
            blocks = np.empty_like(positions)
            for epoch in range(first, last + 1):
                here = epochs == epoch
                blocks[here] = self._epoch_order(epoch)[positions[here]]
        return blocks

    def read_block(self, block: int) -> torch.Tensor:
        """Block ``block`` of the file as a ``[seq_len + 1]`` int64 tensor."""
        start = block * self.seq_len
        # The hot path of random access: a plain ndarray view (np.memmap's slicing goes
        # through Python code) and a prebuilt dtype object.
        return torch.from_numpy(self._tokens[start : start + self._span].astype(_INT64))

    def next_batch(self, batch_size: int) -> torch.Tensor | Batch:
        """The next ``batch_size`` samples of this rank, crossing into new epochs as needed."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        step = self.world_size
        start = self.cursor + self.rank  # this rank's samples: start, start + step, ...
        last = start + step * (batch_size - 1)
        self.cursor += batch_size * step
        epoch = start // self.n_blocks
        if last // self.n_blocks == epoch:
            # Within one epoch (nearly every batch) the rank's blocks are a strided view of
            # that epoch's order: no index arithmetic per sample.
            offset = start - epoch * self.n_blocks
            blocks = self._epoch_order(epoch)[offset : offset + step * batch_size : step]
        else:
            blocks = self.sample_rows(start + step * np.arange(batch_size))
        # One gather of rows for the whole batch: far cheaper than a slice per block.
        tokens = torch.from_numpy(self._rows[blocks].astype(_INT64))
        if not self.document_boundaries:
            return tokens
        return Batch(tokens, torch.from_numpy(self.document_ids(blocks)))

    # Pickled (e.g. into a spawned worker) as its arguments and position, never as the
    # mapped tokens: the receiver maps the same file again.
    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "cursor": self.cursor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["args"])
        self.cursor = state["cursor"]

    def state_dict(self) -> dict[str, Any]:
        """Plain ints: the cursor, plus what must match for it to mean the same samples
        (the world size is recorded, not required: the cursor is global)."""
        return {
            "cursor": self.cursor,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "world_size": self.world_size,
            "n_blocks": self.n_blocks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; refuses a state saved under another seed, layout or file."""
        where = f"{self.packed.bin_path} ({self.split} split)"
        for key in ("seed", "seq_len", "n_blocks"):
            if key in state and int(state[key]) != getattr(self, key):
                raise UserError(
                    f"{where}: checkpointed data position has {key}={state[key]}, this run has"
                    f" {getattr(self, key)}; resuming would repeat or skip samples"
                )
        cursor = state["cursor"] if "cursor" in state else _cursor_of_rank_position(state,
                                                                                    where)
        if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
            raise UserError(f"{where}: checkpointed data position cursor={cursor!r} is not a "
                            "whole number at or above 0")
        self.cursor = cursor


def _cursor_of_rank_position(state: dict[str, Any], where: str) -> int:
    """The global cursor of a state saved before the cursor existed: ``epoch`` and
    ``position`` in each rank's share of an epoch, whose last ``n_blocks % world_size``
    blocks were dropped. Exact where nothing was dropped before the position (the first
    epoch, one rank, or an epoch that splits evenly); otherwise the two orders differ."""
    epoch, position = int(state["epoch"]), int(state["position"])
    world, n_blocks = int(state.get("world_size", 1)), int(state["n_blocks"])
    per_rank = n_blocks // world
    if epoch < 0 or not 0 <= position < per_rank:
        raise UserError(f"{where}: checkpointed data position epoch={epoch}, "
                        f"position={position} is outside 0..{per_rank - 1}")
    if epoch > 0 and n_blocks % world:
        raise UserError(
            f"{where}: the checkpoint was written by an older llm_gym in epoch {epoch} on "
            f"{world} ranks, which skipped {n_blocks % world} block(s) per epoch; this "
            "version reads every block, so resuming would read other samples. Finish the "
            "run with the llm_gym that started it")
    return epoch * n_blocks + position * world
