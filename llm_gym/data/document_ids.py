"""Which document each token of a block belongs to, from a pack's offsets index.

The pack records where every document starts (``PREFIX.idx``: ``offsets[i]`` is the
first token of document ``i``; a sharded pack's offsets run over all its shards), so a
block's document numbers follow from its position alone: no new state, nothing to save.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_gym.errors import UserError


def block_document_ids(doc_starts: np.ndarray, block_starts: np.ndarray,
                       length: int) -> np.ndarray:
    """``[len(block_starts), length]`` int64: for the tokens ``start .. start + length - 1``
    of each block, the index of their document counted from the block's first one.

    ``doc_starts`` is a pack's offsets index (non-decreasing int64, ``offsets[i]`` the
    first token of document ``i``). Only the starts that fall inside a block matter: each
    marks a 1 where it falls and a running sum along the row numbers the documents. An
    empty document (two equal offsets) starts nowhere that holds a token, so it takes no
    number; every index names a document with tokens in the row.
    """
    block_starts = np.asarray(block_starts, dtype=np.int64)
    n = len(block_starts)
    marks = np.zeros((n, length), dtype=np.int64)
    if n == 0 or length == 0:
        return marks
    # Starts strictly after the block's first token and at or before its last one.
    lo = np.searchsorted(doc_starts, block_starts, side="right")
    hi = np.searchsorted(doc_starts, block_starts + (length - 1), side="right")
    counts = hi - lo
    total = int(counts.sum())
    if total:
        rows = np.repeat(np.arange(n), counts)
        # The positions lo[r] .. hi[r] - 1 of every row, end to end, without a loop.
        firsts = np.cumsum(counts) - counts
        which = np.arange(total) - np.repeat(firsts - lo, counts)
        marks[rows, doc_starts[which] - block_starts[rows]] = 1
    return np.cumsum(marks, axis=1, out=marks)


def document_starts(packed: Any) -> np.ndarray:
    """The pack's offsets index as int64 (a view of a single pack's map, no copy),
    refused naming the ``.idx`` (a sharded pack's manifest) when it cannot number
    documents: offsets that decrease would put tokens in no document or two."""
    for shard in getattr(packed, "shards", ()):  # a damaged shard is named, not the manifest
        document_starts(shard)
    offsets = np.asarray(packed.offsets)
    where = packed.idx_path
    if offsets.ndim != 1 or len(offsets) < 1:
        raise UserError(f"{where}: no document offsets index; re-pack the data "
                        "(llm_gym tools pack) to read its document boundaries")
    # Offsets are at most n_tokens, far below 2**63: the int64 view reads the same values.
    starts = offsets.view(np.int64) if offsets.dtype.itemsize == 8 else offsets.astype(np.int64)
    if len(starts) > 1:
        down = np.flatnonzero(starts[1:] < starts[:-1])
        if len(down):
            raise UserError(f"{where}: document offsets decrease after document "
                            f"{int(down[0])}: the pack's document index is damaged, so "
                            "its document boundaries cannot be read; re-pack the data")
    return starts
