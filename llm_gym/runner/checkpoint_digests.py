"""A digest of every file of a checkpoint, recorded at save time and checked on load.

Without them, a flipped byte in a ``.distcp`` shard resumes with different weights and
no warning. Each rank digests the files it writes, as DCP writes them
(checkpoint_writer.py); rank 0 records them all in the ``COMPLETE`` marker; loading
checks the files it is about to read, and names the ones that differ.

The digest is XXH3-128 (the ``xxhash`` package) of the whole file: 12 GB/s on one core
here, against SHA-256's 1.4 GB/s, so hashing a 245 MB checkpoint costs about 20 ms and
does not show in the save time (benchmarks/test_bench_checkpoint_digest.py; SHA-256,
even hashed beside the writes on two threads, made saving 1.48x slower on this 2-core
machine). What it guards against is damage: a flipped, truncated or stale file, where a
128-bit hash of good quality misses a change with probability 2**-128. It is not a
cryptographic hash, and need not be: the marker is not signed, so whoever can rewrite a
checkpoint file can rewrite its recorded digest just as well; what protects against a
crafted file is that loading runs no code from it (checkpoint_metadata.py).

Older checkpoints recorded ``sha256_tree`` (SHA-256 over the SHA-256 digests of the
8 MiB chunks) or, before that, ``sha256`` of the whole file; both still verify.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist
import xxhash

from llm_gym.errors import UserError
from llm_gym.runner.distributed import World

ALGORITHM = "xxh3_128"  # the marker's name for the digest new saves record (see above)
TREE = "sha256_tree"  # recorded by llm_gym before XXH3: SHA-256 over chunk digests
LEGACY = "sha256"  # whole-file SHA-256, recorded before the hash tree
ALGORITHMS = (ALGORITHM, TREE, LEGACY)
HEX_DIGITS = {ALGORITHM: 32, TREE: 64, LEGACY: 64}
CHUNK = 8 << 20
_THREADS = max(1, min(8, os.cpu_count() or 1))

# How a file differs from its record, as a code all ranks can reduce with MAX.
_OK, _CHANGED, _SIZE, _MISSING, _UNRECORDED = 0, 1, 2, 3, 4
_WHY = {
    _CHANGED: "its content differs from the digest recorded at save time",
    _SIZE: "its size differs from the one recorded at save time",
    _MISSING: "it is missing",
    _UNRECORDED: "it has no digest in the marker",
}

FileDigest = dict[str, int | str]  # {"bytes": n, "xxh3_128": hex} (or an older algorithm)


def new_hasher() -> xxhash.xxh3_128:
    """The running digest a writer feeds with a file's bytes, in order."""
    return xxhash.xxh3_128()


def finished_digest(size: int, hasher: xxhash.xxh3_128) -> FileDigest:
    return {"bytes": size, ALGORITHM: hasher.hexdigest()}


def digest_bytes(data: bytes) -> FileDigest:
    """The digest of a file holding ``data`` (as ``digest_file`` would compute it)."""
    return {"bytes": len(data), ALGORITHM: xxhash.xxh3_128(data).hexdigest()}


def digest_file(path: Path, algorithm: str = ALGORITHM) -> FileDigest:
    """The digest of the file at ``path``, by ``algorithm`` (one of ``ALGORITHMS``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if algorithm == TREE:
            return _tree_digest(size, lambda offset: os.pread(fd, CHUNK, offset))
        hasher = new_hasher() if algorithm == ALGORITHM else hashlib.sha256()
        for offset in range(0, size, CHUNK):
            hasher.update(os.pread(fd, CHUNK, offset))
        return {"bytes": size, algorithm: hasher.hexdigest()}
    finally:
        os.close(fd)


def _tree_digest(size: int, chunk: Callable[[int], bytes | memoryview]) -> FileDigest:
    """An older checkpoint's ``sha256_tree``: its chunks hashed on several threads."""
    offsets: Sequence[int] = range(0, size, CHUNK)

    def one(offset: int) -> bytes:
        return hashlib.sha256(chunk(offset)).digest()

    if len(offsets) <= 1:
        parts = [one(offset) for offset in offsets]
    else:
        # A pool per call: no threads outlive it (the run forks data workers later).
        with ThreadPoolExecutor(min(_THREADS, len(offsets))) as pool:
            parts = list(pool.map(one, offsets))
    return {"bytes": size, TREE: hashlib.sha256(b"".join(parts)).hexdigest()}


def gather_digests(own: Mapping[str, FileDigest], world: World) -> dict[str, FileDigest]:
    """Every rank's digests of the files it wrote, merged (a collective call)."""
    if world.world_size == 1:
        return dict(own)
    everyone: list[dict[str, FileDigest] | None] = [None] * world.world_size
    # Pickled between this run's own processes, which trust each other anyway.
    dist.all_gather_object(everyone, dict(own), group=world.group)
    merged: dict[str, FileDigest] = {}
    for part in everyone:
        merged.update(part or {})
    return merged


def verify_files(checkpoint: Path, recorded: Mapping[str, FileDigest], names: Iterable[str],
                 world: World) -> None:
    """Check ``names`` in ``checkpoint`` against ``recorded``; raise ``UserError`` naming
    every file that differs, on every rank. A collective call when ``world`` has several
    ranks: the files are shared out between them, and the verdicts reduced."""
    names = sorted(set(names))
    codes = [_code(checkpoint, name, recorded) if i % world.world_size == world.rank else _OK
             for i, name in enumerate(names)]
    if world.world_size > 1 and names:
        flags = torch.tensor(codes, dtype=torch.int64, device=world.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        codes = flags.tolist()
    damaged = [f"{checkpoint / name} ({_WHY[code]})"
               for name, code in zip(names, codes, strict=True) if code != _OK]
    if damaged:
        raise UserError(f"checkpoint {checkpoint} is damaged: {'; '.join(damaged)}. Use an "
                        "earlier checkpoint (delete this one), or restore it from a copy")


def _code(checkpoint: Path, name: str, recorded: Mapping[str, FileDigest]) -> int:
    expected = recorded.get(name)
    if expected is None:
        return _UNRECORDED
    path = checkpoint / name
    try:
        if path.is_symlink() or not path.is_file():
            return _MISSING
        if path.stat().st_size != expected["bytes"]:
            return _SIZE  # cheap, and the usual damage: a truncated copy
        algorithm = next(a for a in ALGORITHMS if a in expected)  # the marker has one
        same = digest_file(path, algorithm)[algorithm] == expected[algorithm]
        return _OK if same else _CHANGED
    except OSError:
        return _MISSING
