"""One rank's share of a mixture chunk, grouped by source: what a read needs, precomputed.

A mixture chunk says, for each of its ``CHUNK`` global samples, which source gives it and
which of that source's samples it is (``llm_gym.data.mixture``). Rank ``r`` of ``W``
takes the global samples ``r, r + W, ...``; numbered in the order it takes them, they are
its *own* samples ``0, 1, 2, ...`` (own sample ``m`` is global sample ``m * W + r``).

A read of own samples ``[m0, m1)`` needs, per source, the rows of the read that source
fills and its samples for them, in order. Sorting the read's sources each time costs a
dozen array operations per read; here they are sorted once per chunk: ``rows[i]`` are
the chunk's own rows that source ``i`` fills (ascending), ``samples[i]`` its samples
there (ascending too). A read is then two binary searches and two slices per source.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class RankChunk(NamedTuple):
    """The own samples of one rank in one chunk, by source (see the module docstring)."""

    first: int  # the rank's own number of the chunk's first sample it takes
    size: int  # the rank's own samples in this chunk
    rows: list[np.ndarray]  # per source, own rows within the chunk, ascending
    samples: list[np.ndarray]  # per source, its global samples at those rows


def rank_chunk(chunk: int, chunk_size: int, offsets: list[np.ndarray], counts: np.ndarray,
               rank: int, world_size: int) -> RankChunk:
    """Rank ``rank``'s share of chunk ``chunk``, whose source ``i`` gives the samples at
    ``offsets[i]`` (ascending), its global samples ``chunk * counts[i]`` onwards."""
    start = chunk * chunk_size
    # Own numbers of the chunk's first and of the next chunk's first sample of this rank.
    first = -((rank - start) // world_size)  # ceil((start - rank) / world_size)
    offset = first * world_size + rank - start  # its offset within the chunk
    size = len(range(offset, chunk_size, world_size))
    rows, samples = [], []
    for at, count in zip(offsets, counts.tolist(), strict=True):
        # The n-th offset of source i is its global sample chunk * count + n: an offset
        # this rank takes is one of its rows, and the n of those offsets are its samples.
        if world_size == 1:  # every offset: no search
            rows.append(at)
            samples.append(np.arange(chunk * count, (chunk + 1) * count))
        else:
            nth = np.flatnonzero((at - offset) % world_size == 0)  # at >= offset there
            rows.append((at[nth] - offset) // world_size)
            samples.append(nth + chunk * count)
    return RankChunk(first, size, rows, samples)


class ReadPlan(NamedTuple):
    """Own samples ``start .. start + size - 1`` of a rank, located once and read in
    groups of ``group`` rows (a multiple of the batch size).

    Locating samples (which source, which of its rows) costs a dozen array operations
    whatever their number, so a plan locates thousands at once. Moving tokens is best
    done a little at a time: a group of about ``GROUP_BYTES`` of int64 stays in the CPU's
    cache between being written and being handed on, where a buffer of thousands of
    rows would not. Per group and source, what is left is one gather and one placing.
    """

    start: int
    size: int
    group: int
    table: list[Any]  # per source: what its rows are gathered from
    index: list[np.ndarray]  # per source: its rows in ``table``, in plan order
    at: list[np.ndarray]  # per source: where each goes within its group
    splits: list[list[int]]  # per source: where each group's entries start, and the end
    sources: list[Any]
    samples: list[np.ndarray]  # per source: its global samples, in plan order

    def tokens(self, k: int, span: int) -> np.ndarray:
        """Group ``k``'s rows as ``[group, span]`` int64, in a fresh array."""
        out = np.empty((self.group, span), dtype=np.int64)
        for table, index, at, splits in zip(self.table, self.index, self.at, self.splits,
                                            strict=True):
            lo, hi = splits[k], splits[k + 1]
            if hi > lo:
                # Widened while placed: one pass over the tokens, as a single pack's astype.
                out[at[lo:hi]] = table[index[lo:hi]]
        return out

    def document_ids(self, k: int, seq_len: int) -> np.ndarray:
        """Group ``k``'s document ids, ``[group, seq_len]`` int64, from each source."""
        ids = np.empty((self.group, seq_len), dtype=np.int64)
        for source, samples, at, splits in zip(self.sources, self.samples, self.at,
                                               self.splits, strict=True):
            lo, hi = splits[k], splits[k + 1]
            if hi > lo:
                ids[at[lo:hi]] = source.sample_document_ids(samples[lo:hi])
        return ids


def make_plan(start: int, size: int, group: int, rows: list[np.ndarray],
              samples: list[np.ndarray], sources: list[Any], by_rows: list[bool]) -> ReadPlan:
    """The plan of ``size`` own samples from ``start``, source ``i`` filling the plan's
    rows ``rows[i]`` (ascending) with its global samples ``samples[i]``.

    A source whose blocks are rows of one table (``IndexedRows``; ``by_rows[i]``, asked
    once by the caller: a protocol's isinstance costs more than locating a source's rows)
    is gathered from at each group; any other source gives its tokens now
    (``sample_tokens``), and they are that table."""
    tables, indices, ats, splits = [], [], [], []
    bounds = np.arange(0, size + 1, group)
    for source, rows_of, where, which in zip(sources, by_rows, rows, samples, strict=True):
        if rows_of:
            tables.append(source.rows)
            indices.append(source.sample_rows(which))
        else:
            tables.append(source.sample_tokens(which))
            indices.append(np.arange(len(which)))
        split = np.searchsorted(where, bounds)
        # Within its group: less each group's first row (a subtraction, not an int64 %).
        ats.append(where - np.repeat(bounds[:-1], np.diff(split)))
        splits.append(split.tolist())
    return ReadPlan(start, size, group, tables, indices, ats, splits, list(sources), samples)
