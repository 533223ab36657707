"""A digest of every file of a checkpoint, recorded at save time and checked on load.

Without them, a flipped byte in a ``.distcp`` shard resumes with different weights and
no warning. Each rank digests the files it wrote (they are still in the page cache);
rank 0 records them all in the ``COMPLETE`` marker; loading checks the files it is about
to read, and names the ones that differ.

SHA-256 rather than zlib.crc32: crc32 is faster (about 7 GB/s against 2 GB/s here, with
the SHA instructions most x86 and ARM CPUs have) but a checksum, which anyone can make
match a changed file; with SHA-256 a file that matches the recorded digest is the file
that was written. (The marker itself is not signed: whoever can rewrite the checkpoint
can rewrite the digests too. What protects against a crafted file is that loading runs
no code from it; see checkpoint_metadata.py.) At 2 GB/s the digest of a file that was
just written is a small part of writing it; benchmarks/test_bench_checkpoint_digest.py
measures it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist

from llm_gym.errors import UserError
from llm_gym.runner.distributed import World

ALGORITHM = "sha256"
_CHUNK = 4 << 20

# How a file differs from its record, as a code all ranks can reduce with MAX.
_OK, _CHANGED, _SIZE, _MISSING, _UNRECORDED = 0, 1, 2, 3, 4
_WHY = {
    _CHANGED: "its content differs from the digest recorded at save time",
    _SIZE: "its size differs from the one recorded at save time",
    _MISSING: "it is missing",
    _UNRECORDED: "it has no digest in the marker",
}

FileDigest = dict[str, int | str]  # {"bytes": n, "sha256": hex}


def digest_bytes(data: bytes) -> FileDigest:
    return {"bytes": len(data), ALGORITHM: hashlib.new(ALGORITHM, data).hexdigest()}


def digest_file(path: Path) -> FileDigest:
    h, size = hashlib.new(ALGORITHM), 0
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            h.update(view[:n])  # hashlib releases the GIL for large updates
            size += n
    return {"bytes": size, ALGORITHM: h.hexdigest()}


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
        return _OK if digest_file(path)[ALGORITHM] == expected[ALGORITHM] else _CHANGED
    except OSError:
        return _MISSING
