"""A sharded pack read as one: its shards' tokens end to end, in manifest order.

``ShardedPack`` answers what ``PackedTokens`` answers (``tokens``, ``offsets``,
``n_tokens``, ``vocab_size``, ``eod_id``, ``fingerprint``, ``check_tokenizer``,
``verify``), so ``PackedTokens.open`` returns one for a manifest or a directory of shards
and the dataset never knows the difference. ``tokens`` is a ``ShardedTokens`` view: a
slice or an integer array of positions gives the same values as the one array that
packing all inputs at once would have written, across shard boundaries too.

Opening checks each shard's headers against the manifest (tokenizer, counts, content
digest), not the bytes; ``verify()`` (and ``tools pack-merge``) reads and hashes them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llm_gym.data.packed import PackedTokens
from llm_gym.data.shard_manifest import (
    MANIFEST_NAME,
    Manifest,
    check_shard,
    job_manifests,
    read_manifest,
)
from llm_gym.errors import UserError


class ShardedTokens:
    """Read-only concatenation of 1-d arrays, indexed by slices, ints and int arrays."""

    def __init__(self, parts: list[np.ndarray], dtype: np.dtype) -> None:
        self._parts = [p for p in parts if len(p)]  # empty parts would break the search
        self.dtype = np.dtype(dtype)
        self._starts = np.cumsum([0] + [len(p) for p in self._parts], dtype=np.int64)
        self.shape = (int(self._starts[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def tolist(self) -> list[int]:
        return self[:].tolist()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step, dtype=np.int64)]
            return self._span(start, max(start, stop))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {int(key)} out of range for {len(self)} tokens")
            part = int(np.searchsorted(self._starts, i, side="right")) - 1
            return self._parts[part][i - self._starts[part]]
        return self._gather(np.asarray(key))

    def _span(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pieces = []
        part = max(first, 0)
        while start < stop and part < len(self._parts):
            base = int(self._starts[part])
            piece = self._parts[part][start - base : stop - base]
            pieces.append(piece)
            start += len(piece)
            part += 1
        if len(pieces) == 1:
            return pieces[0]  # within one shard: a view, as for one pack
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=self.dtype)

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.dtype.kind not in "iu":
            raise IndexError(f"only integer positions index tokens, not {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise IndexError(f"position out of range for {len(self)} tokens")
        idx = np.where(idx < 0, idx + len(self), idx)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        out = np.empty(idx.shape, dtype=self.dtype)
        for part in np.unique(which):
            mask = which == part
            out[mask] = self._parts[part][idx[mask] - self._starts[part]]
        return out


class _GatheredRows:
    """``rows[b] = tokens[b * step : b * step + span]`` over a ShardedTokens, gathered on use."""

    def __init__(self, tokens: ShardedTokens, n_rows: int, step: int, span: int) -> None:
        self._tokens, self._step = tokens, step
        self._window = np.arange(span, dtype=np.int64)
        self.shape = (n_rows, span)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]), dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        return self._tokens[rows[..., None] * self._step + self._window]


def block_rows(tokens: np.ndarray | ShardedTokens, n_rows: int, step: int,
               span: int) -> Any:
    """Every block of ``span`` tokens starting at a multiple of ``step`` as a row: for one
    pack's array a strided view (no copy; a batch is a gather of whole rows), for a
    sharded pack an object that gathers the same rows when indexed by rows or a slice."""
    if isinstance(tokens, ShardedTokens):
        return _GatheredRows(tokens, n_rows, step, span)
    size = tokens.itemsize
    return np.lib.stride_tricks.as_strided(tokens, shape=(n_rows, span),
                                           strides=(step * size, size), writeable=False)


def manifest_path_of(path: str | Path) -> Path:
    """The manifest that ``path`` (a manifest, or a directory of shards) names."""
    path = Path(path)
    if not path.is_dir():
        return path
    manifest = path / MANIFEST_NAME
    if not manifest.exists():
        jobs = job_manifests(path)
        if jobs:
            n = next(iter(jobs.values()))[0]
            raise UserError(
                f"{path}: {len(jobs)} of {n} jobs' shards but no {MANIFEST_NAME}: once every"
                f" job has finished, run `llm_gym tools pack-merge {path}`"
            )
        raise UserError(f"{path}: a directory without {MANIFEST_NAME}: not a sharded pack"
                        " (`llm_gym tools pack --shard-tokens N --out DIR` writes one)")
    return manifest


class ShardedPack:
    """The shards a manifest lists, opened as one pack."""

    def __init__(self, path: Path, manifest_path: Path, manifest: Manifest,
                 shards: list[PackedTokens]) -> None:
        self.prefix = self.path = path
        self.manifest_path, self.manifest, self.shards = manifest_path, manifest, shards
        # Messages name the manifest where a single pack names its .bin.
        self.bin_path = self.idx_path = manifest_path
        dtype = shards[0].tokens.dtype if shards else np.dtype("<u2")
        self.tokens = ShardedTokens([s.tokens for s in shards], dtype)

    @classmethod
    def open(cls, path: str | Path) -> ShardedPack:
        manifest_path = manifest_path_of(path)
        manifest = read_manifest(manifest_path)
        if manifest.job is not None and manifest.num_jobs > 1:
            raise UserError(f"{manifest_path}: the manifest of job {manifest.job} of"
                            f" {manifest.num_jobs} only; run `llm_gym tools pack-merge"
                            f" {manifest_path.parent}` and use its {MANIFEST_NAME}")
        if not manifest.shards:
            raise UserError(f"{manifest_path}: lists no shards (no documents were packed)")
        shards = []
        for entry in manifest.shards:
            check_shard(manifest_path.parent, entry, manifest, manifest_path, hashes=False)
            shards.append(PackedTokens.open(manifest_path.parent / entry.prefix))
        return cls(Path(path), manifest_path, manifest, shards)

    def __reduce__(self):
        return (ShardedPack.open, (self.path,))

    vocab_size = property(lambda self: self.manifest.vocab_size)
    eod_id = property(lambda self: self.manifest.eod_id)
    fingerprint = property(lambda self: self.manifest.tokenizer_fingerprint)
    n_tokens = property(lambda self: self.manifest.n_tokens)
    n_docs = property(lambda self: self.manifest.n_docs)

    def __len__(self) -> int:
        return self.n_docs

    @cached_property
    def offsets(self) -> np.ndarray:
        """Document starts over all shards (built on first use: n_docs + 1 integers)."""
        parts, base = [np.zeros(1, dtype=np.uint64)], 0
        for shard in self.shards:
            parts.append(shard.offsets[1:] + np.uint64(base))
            base += shard.n_tokens
        return np.concatenate(parts)

    def document(self, i: int) -> np.ndarray:
        if not -self.n_docs <= i < self.n_docs:
            raise IndexError(f"document {i} out of range for {self.n_docs} documents")
        i %= self.n_docs
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def check_tokenizer(self, fingerprint: str, what: str = "the recipe's tokenizer") -> None:
        PackedTokens.check_tokenizer(self, fingerprint, what)  # type: ignore[arg-type]

    def verify(self) -> None:
        """Every shard's bytes hash to the manifest's SHA-256, and its content digest holds."""
        where = self.manifest_path
        for entry, shard in zip(self.manifest.shards, self.shards, strict=True):
            check_shard(where.parent, entry, self.manifest, where, hashes=True)
            shard.verify()
