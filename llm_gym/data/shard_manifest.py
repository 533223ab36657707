"""The manifest of a pack written in shards: which files, in which order, made how.

A sharded pack is a directory::

    part-JJJJJ-KKKKK.bin/.idx   shard K of job J, an ordinary pack (see ``packed``)
    job-JJJJJ-of-NNNNN.json     what job J of N wrote (its shards, in order)
    manifest.json               every job's shards in job order: the dataset

Each manifest (JSON) records the tokenizer (fingerprint, vocab size, eod id), the shard
size asked for, the ordered list of all inputs with their format and size, and for each
shard its token and document counts, the content digest of its headers and the SHA-256
of its two files. ``merge_jobs`` is the finishing step: it checks that every job is
there, that they packed the same inputs with the same tokenizer and that every shard's
files hash to what their job recorded, then writes ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llm_gym.data.packed import MAGIC_BIN, PackedHeader, pack_paths
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input, read_json_object

MANIFEST_NAME = "manifest.json"
MANIFEST_KIND = "llm_gym sharded pack"
MANIFEST_VERSION = 1
_JOB_MANIFEST = re.compile(r"job-(\d{5,})-of-(\d{5,})\.json")
_HASH_CHUNK = 8 << 20


def shard_prefix(job: int, index: int) -> str:
    return f"part-{job:05d}-{index:05d}"


def job_manifest_name(job: int, num_jobs: int) -> str:
    return f"job-{job:05d}-of-{num_jobs:05d}.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_input(path, "a shard") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardEntry:
    prefix: str  # relative to the manifest's directory
    n_tokens: int
    n_docs: int
    content_digest: str  # hex of the 16-byte digest both headers carry
    sha256_bin: str
    sha256_idx: str


@dataclass(frozen=True)
class Manifest:
    tokenizer_fingerprint: str
    vocab_size: int
    eod_id: int
    dtype: str
    shard_tokens: int
    inputs: tuple[dict[str, Any], ...]  # every input of every job: path, format, bytes
    num_jobs: int
    job: int | None  # None: the combined manifest
    job_inputs: tuple[int, int] | None  # [start, stop) of inputs packed by this job
    shards: tuple[ShardEntry, ...]
    # How the texts were read: jobs that differ would pack other texts of the same files.
    # None in a manifest written before they were recorded.
    field: str | None = None
    on_bad_line: str | None = None

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.shards)

    @property
    def n_docs(self) -> int:
        return sum(s.n_docs for s in self.shards)

    def to_json(self) -> str:
        data = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, **asdict(self),
                "n_tokens": self.n_tokens, "n_docs": self.n_docs}
        return json.dumps(data, indent=1) + "\n"

    def write(self, path: Path) -> None:
        with atomic_output(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{path}: {key!r} is missing or not a {getattr(kind, '__name__', kind)};"
                        " not an llm_gym shard manifest?")
    return value


def read_manifest(path: Path) -> Manifest:
    """A manifest file, checked for shape (not against the shards: see ``check_shard``)."""
    path = Path(path)
    data = read_json_object(path, what="a sharded pack's manifest")
    if data.get("kind") != MANIFEST_KIND:
        raise UserError(f"{path}: not an llm_gym shard manifest (kind {data.get('kind')!r},"
                        f" expected {MANIFEST_KIND!r})")
    if data.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path}: manifest version {data.get('version')!r}; this llm_gym reads"
                        f" version {MANIFEST_VERSION}")
    shards = []
    for i, raw in enumerate(_field(data, "shards", list, path)):
        if not isinstance(raw, dict):
            raise UserError(f"{path}: shards[{i}] is not an object")
        where = Path(f"{path} shards[{i}]")
        prefix = _field(raw, "prefix", str, where)
        if Path(prefix).is_absolute() or ".." in Path(prefix).parts or "/" in prefix:
            raise UserError(f"{where}: prefix {prefix!r} must name a file beside the manifest")
        shards.append(ShardEntry(prefix, _field(raw, "n_tokens", int, where),
                                 _field(raw, "n_docs", int, where),
                                 _field(raw, "content_digest", str, where),
                                 _field(raw, "sha256_bin", str, where),
                                 _field(raw, "sha256_idx", str, where)))
    job = data.get("job")
    job_inputs = data.get("job_inputs")
    return Manifest(
        _field(data, "tokenizer_fingerprint", str, path), _field(data, "vocab_size", int, path),
        _field(data, "eod_id", int, path), _field(data, "dtype", str, path),
        _field(data, "shard_tokens", int, path), tuple(_field(data, "inputs", list, path)),
        _field(data, "num_jobs", int, path), job if isinstance(job, int) else None,
        tuple(job_inputs) if isinstance(job_inputs, list) else None, tuple(shards),
        _optional(data, "field", path), _optional(data, "on_bad_line", path),
    )  # fmt: skip


def _optional(data: dict[str, Any], key: str, path: Path) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise UserError(f"{path}: {key!r} is not a string; not an llm_gym shard manifest?")
    return value


def check_shard(directory: Path, entry: ShardEntry, manifest: Manifest, manifest_path: Path,
                *, hashes: bool) -> None:
    """The shard's files are there and are the ones ``manifest_path`` records: from their
    headers (cheap), and with ``hashes`` from the SHA-256 of all their bytes."""
    bin_path, idx_path = pack_paths(directory / entry.prefix)
    for file in (bin_path, idx_path):
        if not file.exists():
            raise UserError(f"{file}: missing: {manifest_path} names shard {entry.prefix}")
    header = PackedHeader.read(bin_path, MAGIC_BIN)
    if header.fingerprint != manifest.tokenizer_fingerprint:
        raise UserError(
            f"{bin_path}: packed with tokenizer fingerprint {header.fingerprint[:16]}..., but"
            f" {manifest_path} records {manifest.tokenizer_fingerprint[:16]}...: shards of"
            " different tokenizers cannot be read as one dataset; re-pack them alike"
        )
    recorded = (entry.n_tokens, entry.n_docs, entry.content_digest)
    if (header.n_tokens, header.n_docs, header.digest.hex()) != recorded:
        raise UserError(
            f"{bin_path}: holds {header.n_tokens} tokens, {header.n_docs} documents (digest"
            f" {header.digest.hex()[:12]}), {manifest_path} records {entry.n_tokens},"
            f" {entry.n_docs} ({entry.content_digest[:12]}): the shard was replaced since;"
            " pack it again, then run `llm_gym tools pack-merge` on the directory"
        )
    if hashes:
        for file, expected in ((bin_path, entry.sha256_bin), (idx_path, entry.sha256_idx)):
            if (actual := file_sha256(file)) != expected:
                raise UserError(f"{file}: SHA-256 {actual[:16]}... differs from the"
                                f" {expected[:16]}... {manifest_path} records: the file was"
                                " changed or damaged; pack its job again")


def job_manifests(directory: Path) -> dict[int, tuple[int, Path]]:
    """job index -> (number of jobs, path) of the job manifests in ``directory``."""
    found = {}
    for name in sorted(os.listdir(directory)):
        if m := _JOB_MANIFEST.fullmatch(name):
            job, num_jobs = int(m[1]), int(m[2])
            if job in found and found[job][0] != num_jobs:
                raise UserError(f"{directory}: job {job} has manifests for {found[job][0]} and"
                                f" {num_jobs} jobs; remove those of the run you abandoned")
            found[job] = (num_jobs, directory / name)
    return found


_SAME_IN_EVERY_JOB = ("tokenizer_fingerprint", "vocab_size", "eod_id", "dtype",
                      "shard_tokens", "inputs", "num_jobs", "field", "on_bad_line")


def differing_key(a: Manifest, b: Manifest) -> str | None:
    """The first of what every job of one pack must share that ``a`` and ``b`` do not
    (a field a manifest written before it was recorded lacks is not compared)."""
    for key in _SAME_IN_EVERY_JOB:
        mine, theirs = getattr(a, key), getattr(b, key)
        if mine is not None and theirs is not None and mine != theirs:
            return key
    return None


def merge_jobs(directory: Path, *, threads: int = 8) -> Manifest:
    """The finishing step: check every job's manifest and shards, write ``manifest.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory of shards (`tools pack --shard-tokens`"
                        " writes one)")
    found = job_manifests(directory)
    if not found:
        raise UserError(f"{directory}: no job manifest (job-*-of-*.json) to merge")
    num_jobs = {n for n, _ in found.values()}
    if len(num_jobs) > 1:
        raise UserError(f"{directory}: job manifests of runs with {sorted(num_jobs)} jobs;"
                        " remove those of the run you abandoned")
    (n,) = num_jobs
    missing = [j for j in range(n) if j not in found]
    if missing or len(found) != n:
        names = ", ".join(job_manifest_name(j, n) for j in missing[:5])
        raise UserError(f"{directory}: {len(missing)} of {n} jobs have not finished (no"
                        f" {names}{', ...' if len(missing) > 5 else ''}); run them, then merge")
    manifests = [(found[j][1], read_manifest(found[j][1])) for j in range(n)]
    first_path, first = manifests[0]
    for path, m in manifests[1:]:
        if (key := differing_key(m, first)) is not None:
            what = ("shards packed with different tokenizers cannot be read as one"
                    " dataset" if key == "tokenizer_fingerprint" else
                    "the jobs were not run with the same arguments")
            raise UserError(f"{path}: {key} {getattr(m, key)!r} differs from"
                            f" {first_path}'s {getattr(first, key)!r}: {what}"
                            if key in ("field", "on_bad_line") else
                            f"{path}: {key} differs from {first_path}'s: {what}")
    checks = [(entry, m, path) for path, m in manifests for entry in m.shards]
    with ThreadPoolExecutor(max(1, min(threads, len(checks)))) as pool:
        # hashlib releases the GIL on large buffers: shards are hashed in parallel.
        list(pool.map(lambda c: check_shard(directory, *c, hashes=True), checks))
    merged = replace(first, job=None, job_inputs=None,
                     shards=tuple(e for _, m in manifests for e in m.shards))
    merged.write(directory / MANIFEST_NAME)
    return merged
