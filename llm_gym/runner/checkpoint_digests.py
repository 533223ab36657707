"""A digest of every file of a checkpoint, recorded at save time and checked on load.

Without them, a flipped byte in a ``.distcp`` shard resumes with different weights and
no warning. Each rank digests the files it wrote (they are still in the page cache);
rank 0 records them all in the ``COMPLETE`` marker; loading checks the files it is about
to read, and names the ones that differ.

The digest is SHA-256 over the SHA-256 digests of the file's 8 MiB chunks (a one-level
hash tree): the chunks are hashed by several threads at once (hashlib and os.pread
release the GIL), so digesting keeps up with writing; it is as collision-resistant as
SHA-256 over the whole file. SHA-256 rather than zlib.crc32: crc32 is faster (about
5 GB/s against 2 GB/s per core here, with the SHA instructions most x86 and ARM CPUs
have) but a checksum, which anyone can make match a changed file; with SHA-256 a file
that matches the recorded digest is the file that was written. (The marker itself is not
signed: whoever can rewrite the checkpoint can rewrite the digests too. What protects
against a crafted file is that loading runs no code from it; see checkpoint_metadata.py.)

At save time the data files are digested while DCP writes them (checkpoint_writer.py),
so the digest hides behind the writing; benchmarks/test_bench_checkpoint_digest.py
measures the cost against saving without. Checkpoints written before the hash tree
recorded ``sha256`` (SHA-256 of the whole file, ``LEGACY``); they still verify.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed as dist

from llm_gym.errors import UserError
from llm_gym.runner.distributed import World

ALGORITHM = "sha256_tree"  # the marker's name for the digest (see above)
LEGACY = "sha256"  # whole-file SHA-256, recorded by llm_gym before the hash tree
ALGORITHMS = (ALGORITHM, LEGACY)
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

FileDigest = dict[str, int | str]  # {"bytes": n, "sha256_tree": hex} (or "sha256": hex)


def digest_bytes(data: bytes) -> FileDigest:
    """The digest of a file holding ``data`` (as ``digest_file`` would compute it)."""
    view = memoryview(data)
    return _digest(len(data), lambda offset: view[offset:offset + CHUNK])


def digest_file(path: Path) -> FileDigest:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _digest(os.fstat(fd).st_size, lambda offset: os.pread(fd, CHUNK, offset))
    finally:
        os.close(fd)


def chunk_digest(data: bytes | memoryview) -> bytes:
    """The digest of one chunk (up to ``CHUNK`` bytes, at a multiple of it in the file)."""
    return hashlib.sha256(data).digest()


def tree_digest(size: int, parts: Sequence[bytes]) -> FileDigest:
    """The digest of a file of ``size`` bytes whose chunks' digests are ``parts``."""
    return {"bytes": size, ALGORITHM: hashlib.sha256(b"".join(parts)).hexdigest()}


def _digest(size: int, chunk: Callable[[int], bytes | memoryview]) -> FileDigest:
    offsets: Sequence[int] = range(0, size, CHUNK)

    def one(offset: int) -> bytes:
        return chunk_digest(chunk(offset))

    if len(offsets) <= 1:
        parts = [one(offset) for offset in offsets]
    else:
        # A pool per call: no threads outlive it (the run forks data workers later).
        with ThreadPoolExecutor(min(_THREADS, len(offsets))) as pool:
            parts = list(pool.map(one, offsets))
    return tree_digest(size, parts)


def _legacy_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def gather_digests(own: Mapping[str, FileDigest], world: World) -> dict[str, FileDigest]:
    """Every rank's digests of the files it wrote, merged (a collective call)."""
    if world.world_size == 1:
        return dict(own)
    everyone: list[dict[str, FileDigest] | None] = [None] * world.world_size
    # Pickled between this run's own processes, which trust each other anyway.
    dist.all_gather_object(everyone, dict(own))
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
        if ALGORITHM in expected:
            return _OK if digest_file(path)[ALGORITHM] == expected[ALGORITHM] else _CHANGED
        return _OK if _legacy_digest(path) == expected[LEGACY] else _CHANGED
    except OSError:
        return _MISSING
