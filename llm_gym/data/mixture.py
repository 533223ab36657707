"""A weighted mixture of datasets: one global sequence of samples drawn from several sources.

Which source: the mixture's global sequence is cut into chunks of ``CHUNK`` samples.
Every chunk holds the same number of samples of each source, ``chunk_counts``, the
weights' shares of ``CHUNK`` rounded by largest remainder, in an order shuffled by
``default_rng([seed, chunk])``. So the source of global sample ``k`` is a pure function of
(seed, weights, k), and so is every source's position at any cursor: source ``i`` has
given ``chunk * chunk_counts[i]`` samples before a chunk starts, plus those it gave
earlier in the chunk. The ``n``-th sample a source gives is its own global sample ``n``
(``llm_gym.data.indexed``): its epoch ``n // samples_per_epoch``, shuffled its own way.

Weights are proportions of tokens. Every source yields blocks of the same ``seq_len``
(the trainer's), so a share of samples is the same share of tokens; rounding to
``CHUNK`` keeps the realised share within ``0.5 / CHUNK`` of the weight.

Ranks: rank ``r`` of ``world_size`` takes global samples ``r, r + world_size, ...``, so the
k-th batches of all ranks together hold the samples one process would take in its k-th
batch of ``world_size`` times the size: 1 and 2 processes train on the same samples.

When a source runs out (``on_exhausted``): ``cycle`` lets it start its next epoch, in a new
order; ``stop`` ends the mixture before the first batch that would need a sample past any
source's first epoch: ``next_batch`` raises ``DataExhausted`` and takes nothing.

Reading: each chunk's share of a rank is sorted by source once
(``mixture_schedule.rank_chunk``); a rank then locates its next ``PLAN_ROWS`` samples at
once (per source: which rows of the batch, which of its rows), and moves their tokens in
groups of about ``GROUP_BYTES`` (whole batches), handing batches out as slices of the
group. Locating costs a dozen array operations whatever the count, so it is spread over
thousands of samples; moving tokens a group at a time keeps the group in the CPU's cache
from being written to being handed on. What is located ahead is a pure function of the
cursor, so it changes no sample and no state, and a cursor that moves (resume, another
batch size) only locates again.

State (``state_dict``): plain ints, as a checkpoint's ``rank{r}.pt`` holds them. The
global cursor (samples taken by all ranks) is the position; each source's position is
saved beside it for the record (and checked); seed, world size, seq_len, the per-chunk
counts and every source's samples per epoch must match to resume, and a mismatch is
refused naming the field.

Document boundaries (``document_boundaries=True``): every source must say where
documents start in its samples (``llm_gym.data.indexed.DocumentBoundaries``); they are
read ahead with the tokens, row for row, and a batch is a ``Batch(tokens,
document_ids)``. Off, a batch is the bare token tensor.

Accounting (``consumed_tokens``): ``{label: tokens}``, the tokens (``seq_len`` per sample,
the targets the loss sees, as the metrics' ``tokens`` counts them) taken from each source
by all ranks together since the start of the run, at the current cursor or at a saved
state's (a feed that reads ahead passes the state of the batch the loop consumed). Labels
are given by the caller, e.g. ``"0:PackedTokens:data/web"``; their sum is the run's tokens.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from llm_gym.data.batch import Batch
from llm_gym.data.indexed import (
    DataExhausted,
    DocumentBoundaries,
    GlobalPosition,
    IndexedRows,
    IndexedSamples,
)
from llm_gym.data.mixture_schedule import RankChunk, ReadPlan, make_plan, rank_chunk
from llm_gym.errors import UserError

OnExhausted = Literal["cycle", "stop"]
CHUNK = 4096  # samples per shuffled chunk: weights resolve to 1/4096 of the samples
PLAN_ROWS = 4096  # own samples located at once (index arrays only)
GROUP_BYTES = 1 << 21  # int64 tokens read at once (at least a batch): about an L2 cache


def chunk_counts(weights: Sequence[float], chunk: int = CHUNK) -> list[int]:
    """Each weight's share of ``chunk`` samples, by largest remainder (ties: the earlier).

    Weights whose sum overflows a float (``[1e308, 1e308]``) are divided by the largest
    first; any other weights are used as given, so their counts never change."""
    total = _sum(weights)
    if not math.isfinite(total):
        largest = max(weights)
        weights = [w / largest for w in weights]
        total = math.fsum(weights)
    quotas = [w / total * chunk for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: chunk - sum(counts)]:
        counts[i] += 1
    return counts


def starved(weights: Sequence[float], chunk: int = CHUNK) -> list[int]:
    """The indices of the weights too small to get a sample of any chunk."""
    return [i for i, count in enumerate(chunk_counts(weights, chunk)) if count == 0]


def starved_reason(weights: Sequence[float], chunk: int = CHUNK) -> str:
    """Why a weight ``starved`` names gets no sample, in words."""
    if len(weights) > chunk:
        return (f"a mixture gives each source a share of every {chunk} samples, so it "
                f"mixes at most {chunk} sources, not {len(weights)}")
    return (f"a weight must be at least 1/{chunk} of their sum "
            f"({_sum(weights) / chunk:.3g})")


def _sum(weights: Sequence[float]) -> float:
    try:
        return math.fsum(weights)
    except OverflowError:  # fsum refuses to overflow on the way; the sum is infinite
        return math.inf


def plural(count: int, noun: str) -> str:
    """``1 source``, ``2 sources``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class MixtureDataset(GlobalPosition):
    """Batches of ``[batch_size, seq_len + 1]`` int64 tokens from weighted ``sources``."""

    def __init__(
        self,
        sources: Sequence[Any],
        weights: Sequence[float],
        *,
        labels: Sequence[str] | None = None,
        seed: int = 0,
        on_exhausted: OnExhausted = "cycle",
        rank: int = 0,
        world_size: int = 1,
        document_boundaries: bool = False,
    ) -> None:
        labels = list(labels) if labels is not None else [str(i) for i in range(len(sources))]
        if not sources or len(labels) != len(sources):
            raise UserError(f"a mixture needs one label per source and at least one source, "
                            f"got {len(sources)} sources and {len(labels)} labels")
        _check_weights(weights, len(sources))
        for i, source in enumerate(sources):
            _check_source(source, f"sources[{i}] ({labels[i]})", document_boundaries)
        seq_lens = {source.seq_len for source in sources}
        if len(seq_lens) > 1:
            each = (f"{label}: {s.seq_len}" for label, s in zip(labels, sources, strict=True))
            raise UserError(f"a mixture's sources must share seq_len; got {', '.join(each)}")
        if on_exhausted not in ("cycle", "stop"):
            raise UserError(f"on_exhausted must be 'cycle' or 'stop', got {on_exhausted!r}")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} outside world_size {world_size}")
        if seed < 0:
            raise UserError(f"seed must be >= 0, got {seed}")
        counts = chunk_counts(weights)
        too_small = [labels[i] for i, c in enumerate(counts) if c == 0]
        if too_small:
            raise UserError(f"weights: {', '.join(too_small)} would get no sample: "
                            f"{starved_reason(weights)}")
        self.sources, self.labels = list(sources), labels
        self.seq_len = seq_lens.pop()
        self.seed, self.on_exhausted = seed, on_exhausted
        self.rank, self.world_size = rank, world_size
        self.chunk_counts = np.array(counts, dtype=np.int64)
        self.source_samples = np.array([s.samples_per_epoch for s in sources], dtype=np.int64)
        self.document_boundaries = document_boundaries
        self.cursor = 0  # global samples taken, all ranks together
        self._chunks: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        self._rank_chunks: dict[int, RankChunk] = {}  # this rank's share, by source
        self._chunks_lock = threading.Lock()
        # Read ahead: this rank's next samples, gathered together, handed out as slices.
        self._no_tokens = np.empty((0, self.seq_len + 1), dtype=np.int64)
        self._no_ids = np.empty((0, self.seq_len), dtype=np.int64)
        self._ahead, self._ahead_ids = self._no_tokens, self._no_ids  # ids: with boundaries
        self._ahead_start = 0  # the rank's sample number (cursor // world_size) of row 0
        self._plan: ReadPlan | None = None  # the samples located ahead, read by groups
        self._group_bytes = GROUP_BYTES
        self._by_rows = [isinstance(s, IndexedRows) for s in self.sources]  # asked once

    def _chunk(self, chunk: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """For each sample of the chunk its source; and per source, the offsets in the
        chunk of its samples (ascending): its ``n``-th offset gives its global sample
        ``chunk * chunk_counts[i] + n``."""
        with self._chunks_lock:  # a feed's thread reads on while the loop asks for tokens
            found = self._chunks.get(chunk)
            if found is None:
                found = self._chunks[chunk] = self._make_chunk(chunk)
                if len(self._chunks) > 4:  # a batch, a read-ahead, a stop check: a few chunks
                    del self._chunks[next(iter(self._chunks))]
        return found

    def _make_chunk(self, chunk: int) -> tuple[np.ndarray, list[np.ndarray]]:
        n_sources = len(self.sources)
        which = np.repeat(np.arange(n_sources), self.chunk_counts)
        np.random.default_rng([self.seed, chunk]).shuffle(which)
        # Each source's offsets, not a running count per offset ([CHUNK + 1, S], a strided
        # cumsum that cost more than the shuffle): a count is a binary search in them.
        return which, [np.flatnonzero(which == i) for i in range(n_sources)]

    def positions_at(self, cursor: int) -> np.ndarray:
        """Samples each source has given before global sample ``cursor``."""
        chunk, offset = divmod(cursor, CHUNK)
        given = [at.searchsorted(offset) for at in self._chunk(chunk)[1]]
        return chunk * self.chunk_counts + np.array(given, dtype=np.int64)

    def locate(self, start: int, count: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """For global samples ``start, start + step, ...`` (``count`` of them): the source
        of each, and its global sample in that source (ascending, per source)."""
        parts, stop = [], start + step * (count - 1) + 1
        while start < stop:
            chunk, offset = divmod(start, CHUNK)
            end = min(stop - chunk * CHUNK, CHUNK)
            which, offsets = self._chunk(chunk)
            nth = np.empty(CHUNK, dtype=np.int64)  # the reference path: made on each call
            for i, at in enumerate(offsets):
                first = chunk * self.chunk_counts[i]
                nth[at] = np.arange(first, first + self.chunk_counts[i])
            parts.append((which[offset:end:step], nth[offset:end:step]))
            start += step * len(parts[-1][0])
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([w for w, _ in parts]), np.concatenate([n for _, n in parts]))

    def read(self, start: int, count: int, step: int = 1) -> np.ndarray:
        """Global samples ``start, start + step, ...`` as ``[count, seq_len + 1]`` int64.

        Any start and step, sorted by source on each call: the reference that the
        rank's own reads (``_read_own``, precomputed per chunk) must equal."""
        which, nth = self.locate(start, count, step)
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        for i, source in enumerate(self.sources):
            rows = np.flatnonzero(which == i)
            if len(rows):
                out[rows] = source.sample_tokens(nth[rows])
        return out

    def _rank_chunk(self, chunk: int) -> RankChunk:
        """This rank's samples of ``chunk`` grouped by source, made once per chunk."""
        with self._chunks_lock:
            found = self._rank_chunks.get(chunk)
        if found is None:
            found = rank_chunk(chunk, CHUNK, self._chunk(chunk)[1], self.chunk_counts,
                               self.rank, self.world_size)
            with self._chunks_lock:
                self._rank_chunks[chunk] = found
                if len(self._rank_chunks) > 2:  # reads move forward: this one and the last
                    del self._rank_chunks[next(iter(self._rank_chunks))]
        return found

    def _by_source(self, first: int, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """For this rank's own samples ``first .. first + count - 1`` (own sample ``m`` is
        global sample ``m * world_size + rank``), per source: the rows (from 0) it fills
        and its global samples there, both ascending. Slices of the chunks' schedules
        (``llm_gym.data.mixture_schedule``), no sorting."""
        n_sources = len(self.sources)
        rows: list[list[np.ndarray]] = [[] for _ in range(n_sources)]
        samples: list[list[np.ndarray]] = [[] for _ in range(n_sources)]
        m, end = first, first + count
        while m < end:
            plan = self._rank_chunk((m * self.world_size + self.rank) // CHUNK)
            x, y = m - plan.first, min(end - plan.first, plan.size)
            for i, own in enumerate(plan.rows):
                lo, hi = own.searchsorted(x), own.searchsorted(y)
                if hi > lo:
                    rows[i].append(own[lo:hi] + (plan.first - first))
                    samples[i].append(plan.samples[i][lo:hi])
            m = plan.first + y
        empty = np.empty(0, dtype=np.int64)
        return ([empty if not r else r[0] if len(r) == 1 else np.concatenate(r) for r in rows],
                [empty if not n else n[0] if len(n) == 1 else np.concatenate(n)
                 for n in samples])

    def _plan_for(self, mine: int, batch_size: int) -> ReadPlan:
        """The plan whose next group starts at own sample ``mine``: the current one, or a
        new one from ``mine`` (the first read, a new batch size, a moved cursor)."""
        plan = self._plan
        if (plan is not None and plan.group % batch_size == 0
                and plan.start <= mine < plan.start + plan.size
                and (mine - plan.start) % plan.group == 0):
            return plan
        span = self.seq_len + 1
        rows = min(self._group_bytes // (8 * span), PLAN_ROWS)
        group = batch_size * max(1, rows // batch_size)
        size = group * max(1, PLAN_ROWS // group)
        rows, samples = self._by_source(mine, size)
        self._plan = make_plan(mine, size, group, rows, samples, self.sources,
                               self._by_rows)
        return self._plan

    def next_batch(self, batch_size: int) -> torch.Tensor | Batch:
        """This rank's share of the next ``batch_size * world_size`` global samples."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        end = self.cursor + batch_size * self.world_size
        if self.on_exhausted == "stop":
            # The whole world's window, so every rank stops at the same batch.
            self._refuse_exhausted(end)
        mine = self.cursor // self.world_size  # this rank's samples taken so far
        first = mine - self._ahead_start
        if first < 0 or first + batch_size > len(self._ahead):
            # Let go of the last group first: one that no batch holds any more is then
            # memory the allocator hands back at once, still in the CPU's cache. (A view
            # of it, even an empty one, would keep it alive.)
            self._ahead, self._ahead_ids = self._no_tokens, self._no_ids
            plan = self._plan_for(mine, batch_size)
            k = (mine - plan.start) // plan.group
            self._ahead = plan.tokens(k, self.seq_len + 1)
            if self.document_boundaries:
                self._ahead_ids = plan.document_ids(k, self.seq_len)
            self._ahead_start, first = mine, 0
        self.cursor = end
        # A fresh buffer per read-ahead: no batch handed out is ever written again.
        tokens = torch.from_numpy(self._ahead[first : first + batch_size])
        if not self.document_boundaries:
            return tokens
        return Batch(tokens, torch.from_numpy(self._ahead_ids[first : first + batch_size]))

    def _refuse_exhausted(self, end: int) -> None:
        used = self.positions_at(end)
        over = np.flatnonzero(used > self.source_samples)
        if len(over):
            i = int(over[0])
            raise DataExhausted(
                f"mixture source {self.labels[i]} ran out after its {self.source_samples[i]} "
                f"samples of one epoch, at global sample {self.cursor} (on_exhausted: stop)"
            )

    # Pickled (into a spawned worker, as a pack is) without the lock and the caches.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _chunks={}, _rank_chunks={}, _ahead=self._no_tokens,
                     _ahead_ids=self._no_ids, _plan=None)
        del state["_chunks_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _chunks_lock=threading.Lock())

    def consumed_tokens(self, state: dict[str, Any] | None = None) -> dict[str, int]:
        """Tokens taken from each source by all ranks, at the current position or ``state``'s."""
        cursor = self.cursor if state is None else int(state["cursor"])
        taken = zip(self.labels, self.positions_at(cursor), strict=True)
        return {label: int(n) * self.seq_len for label, n in taken}

    def state_dict(self) -> dict[str, Any]:
        """Plain ints (and lists of them): the cursor, and what must match to resume."""
        return {
            "cursor": self.cursor,
            "seed": self.seed,
            "world_size": self.world_size,
            "seq_len": self.seq_len,
            "chunk_counts": [int(c) for c in self.chunk_counts],
            "source_samples": [int(n) for n in self.source_samples],
            "positions": [int(p) for p in self.positions_at(self.cursor)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; refuses one saved by a differently made mixture."""
        why = {
            "seed": "the order of sources would differ",
            "seq_len": "samples would be other blocks",
            "chunk_counts": "the weights (samples of each source per 4096) differ",
            "source_samples": "a source holds another number of samples per epoch",
        }
        mine = self.state_dict()
        for key, reason in why.items():
            if key in state and _plain(state[key]) != mine[key]:
                raise UserError(
                    f"mixture: checkpointed data position has {key}={_plain(state[key])}, this "
                    f"run has {mine[key]}: {reason}; resuming would repeat or skip samples"
                )
        cursor = state.get("cursor")
        if not isinstance(cursor, int) or cursor < 0 or cursor % self.world_size:
            raise UserError(f"mixture: checkpointed data position cursor={cursor!r} is not a "
                            f"multiple of world_size {self.world_size} at or above 0")
        positions = [int(p) for p in self.positions_at(cursor)]
        if "positions" in state and _plain(state["positions"]) != positions:
            raise UserError(f"mixture: checkpointed data position has positions="
                            f"{_plain(state['positions'])}, but cursor={cursor} means "
                            f"{positions}; the state is inconsistent")
        self.cursor = cursor


def _plain(value: Any) -> Any:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else value


def _check_weights(weights: Sequence[float], n_sources: int) -> None:
    if len(weights) != n_sources:
        raise UserError(f"weights: {plural(len(weights), 'weight')} given for "
                        f"{plural(n_sources, 'source')}; give one weight per source")
    for i, w in enumerate(weights):
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise UserError(f"weights[{i}]: must be a finite number above 0, got {w!r}")


def _check_source(source: Any, where: str, document_boundaries: bool) -> None:
    if isinstance(source, MixtureDataset):
        raise UserError(f"{where}: a Mixture cannot be a source of another Mixture; list "
                        "its sources in this one, with their weights multiplied")
    if not isinstance(source, IndexedSamples):
        raise UserError(
            f"{where}: a {type(source).__name__} cannot be mixed: a mixture source numbers "
            "its samples globally (samples_per_epoch and sample_tokens, see "
            "llm_gym.data.indexed), as PackedTokens and DemoCorpus do"
        )
    if document_boundaries and not isinstance(source, DocumentBoundaries):
        raise UserError(
            f"{where}: a {type(source).__name__} does not say where its documents start "
            "(sample_document_ids, see llm_gym.data.indexed), so a mixture with "
            "document_boundaries cannot hand them on; mix packed datasets (PackedTokens, "
            "DemoCorpus), or turn document_boundaries off"
        )
    if source.samples_per_epoch < 1:
        raise UserError(f"{where}: has no sample of seq_len + 1 tokens")
