"""What a dataset offers to be mixed: its samples by global, world-size-independent index.

A rank-sharded dataset hands out "my next batch"; a mixture needs more, because it decides
which source each sample of its own sequence comes from and must know, at any cursor,
where every source stands. So a mixable source numbers its samples globally: sample ``j``
is the block at position ``j % samples_per_epoch`` of epoch ``j // samples_per_epoch``'s
visiting order, the same for every rank and any world size. The source keeps no position
of its own; the mixture's cursor is the whole state.

``sample_tokens`` returns the blocks as one integer array rather than int64 tensors so
that a mixture writes each source's blocks straight into its own int64 batch, in one
pass, instead of widening them first and copying them again.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class IndexedSamples(Protocol):
    """A source of ``[seq_len + 1]``-token blocks, addressed by global sample index."""

    seq_len: int

    @property
    def samples_per_epoch(self) -> int:
        """Blocks in one epoch (all ranks together); always >= 1."""
        ...

    def sample_tokens(self, samples: np.ndarray) -> np.ndarray:
        """The blocks of global samples ``samples`` (int64, >= 0, any epoch) as an
        integer array ``[len(samples), seq_len + 1]`` of token ids, in that order."""
        ...


@runtime_checkable
class IndexedRows(Protocol):
    """A mixable source whose blocks are rows of one table (a pack's blocks as a strided
    view): a mixture then locates many samples at once (``sample_rows``) and gathers
    their tokens from ``rows`` later, a few at a time, with one array operation each."""

    @property
    def rows(self) -> Any:
        """The table: indexed by an int64 array of rows, it gives ``[len, seq_len + 1]``
        token ids, as ``sample_tokens`` does."""
        ...

    def sample_rows(self, samples: np.ndarray) -> np.ndarray:
        """The rows of ``rows`` holding global samples ``samples``, in that order:
        ``rows[sample_rows(s)]`` equals ``sample_tokens(s)``."""
        ...


@runtime_checkable
class DocumentBoundaries(Protocol):
    """A mixable source that also says where documents start in its samples, for a
    mixture with ``document_boundaries`` on (``PackedTokens`` and ``DemoCorpus`` do)."""

    def sample_document_ids(self, samples: np.ndarray) -> np.ndarray:
        """For global samples ``samples``, the index of each input token's document
        within its block (0, 1, ... along the row), int64 ``[len(samples), seq_len]``."""
        ...


class GlobalPosition:
    """Derive a training dataset from this to declare that its ``state_dict`` is one
    position for all ranks together, independent of the world size: a state saved on W
    ranks, loaded on any number of ranks, continues with the samples W ranks would have
    read next. A checkpoint of such a dataset can resume on another world size (with a
    fixed global batch); any other dataset's resumes on the world size that wrote it."""


class DataExhausted(Exception):  # noqa: N818 -- it is a signal, not an error
    """The data ran out and the recipe said to stop there (``on_exhausted: stop``).

    Raised by ``next_batch`` before any sample of the batch is taken, so the dataset's
    position (and its ``state_dict``) is still that after the last full batch. Every rank
    raises it at the same batch: the check covers the whole world's share of that batch.
    The trainer ends the run cleanly on it, as at ``max_steps``.
    """
