"""``pack --shard-tokens N [--num-jobs J --job-index i]``: a pack written as shards.

The inputs (in their fixed order, see ``sources.expand_inputs``) are split into ``J``
contiguous runs of about equal count; job ``i`` packs run ``i`` alone, so jobs can run on
different machines at once (a SLURM array). Job ``i``'s shards, read after job ``i-1``'s,
hold exactly the tokens one pack of all inputs would hold, in the same order. A shard
ends with the first document that brings it to ``N`` tokens or more (documents are never
split), so the cuts depend on the documents alone, not on batches or workers.

A job with no inputs (fewer inputs than jobs) writes a manifest of no shards: the array
still completes, and the merge still finds every job. A job's shards are written into a
staging directory and moved into place only when all of them are complete, so a job that
fails leaves the directory as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from llm_gym.data.file_kinds import PACKED_BIN, PACKED_IDX, check_outputs
from llm_gym.data.jsonl_texts import OnBadLine
from llm_gym.data.pack import (
    PackSummary,
    Tally,
    check_pack_arguments,
    records_of,
    tokenized_documents,
)
from llm_gym.data.packed import PackedWriter, pack_paths, token_dtype
from llm_gym.data.shard_manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    differing_key,
    file_sha256,
    job_manifest_name,
    job_manifests,
    read_manifest,
    shard_prefix,
)
from llm_gym.data.sources import InputFile
from llm_gym.data.tokenizer import Tokenizer
from llm_gym.errors import UserError
from llm_gym.fileio import fsync_dir, make_parent_dirs, output_error

MAX_JOBS = 99_999  # the width of the job number in file names


def job_share(n_inputs: int, num_jobs: int, job_index: int) -> tuple[int, int]:
    """``[start, stop)`` of the inputs job ``job_index`` packs: contiguous, in order, the
    counts differing by at most one; empty for some jobs when there are fewer inputs."""
    if not 1 <= num_jobs <= MAX_JOBS:
        raise UserError(f"--num-jobs {num_jobs}: expected 1..{MAX_JOBS}")
    if not 0 <= job_index < num_jobs:
        raise UserError(f"--job-index {job_index}: expected 0..{num_jobs - 1} for"
                        f" --num-jobs {num_jobs}")
    return n_inputs * job_index // num_jobs, n_inputs * (job_index + 1) // num_jobs


class ShardWriter:
    """Documents in, shards of at least ``shard_tokens`` tokens out (the last may hold
    fewer), each an ordinary pack in ``directory``."""

    def __init__(self, directory: Path, job: int, shard_tokens: int, tokenizer: Tokenizer):
        self.directory, self.job, self.shard_tokens = directory, job, shard_tokens
        self._meta = dict(vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eod_id,
                          fingerprint=tokenizer.fingerprint())
        self._writer: PackedWriter | None = None
        self.shards: list[ShardEntry] = []

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        while len(lengths):
            if self._writer is None:
                prefix = self.directory / shard_prefix(self.job, len(self.shards))
                self._writer = PackedWriter(prefix, **self._meta)
            ends = np.cumsum(lengths)
            room = self.shard_tokens - self._writer.n_tokens
            # Documents up to and including the first that fills the shard.
            take = min(int(np.searchsorted(ends, room)) + 1, len(lengths))
            n = int(ends[take - 1])
            self._writer.add_documents(tokens[:n], lengths[:take])
            tokens, lengths = tokens[n:], lengths[take:]
            if self._writer.n_tokens >= self.shard_tokens:
                self._close()

    def _close(self) -> None:
        assert self._writer is not None
        writer, self._writer = self._writer, None
        header = writer.finish()
        bin_path, idx_path = writer.bin_path, writer.idx_path
        self.shards.append(ShardEntry(
            bin_path.name[: -len(".bin")], header.n_tokens, header.n_docs, header.digest.hex(),
            file_sha256(bin_path), file_sha256(idx_path),
        ))  # fmt: skip

    def finish(self) -> list[ShardEntry]:
        if self._writer is not None:
            self._close()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def pack_shards(
    files: Sequence[InputFile],
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    shard_tokens: int,
    num_jobs: int = 1,
    job_index: int = 0,
    field: str = "text",
    workers: int = 1,
    batch_docs: int = 256,
    progress: bool = False,
    on_bad_line: OnBadLine = "fail",
) -> PackSummary:
    """Pack job ``job_index``'s share of ``files`` into shards in ``out_dir`` and write its
    job manifest; a single job (``num_jobs=1``) writes ``manifest.json`` too."""
    out_dir = Path(out_dir)
    check_pack_arguments(workers, batch_docs, on_bad_line)
    if shard_tokens < 1:
        raise UserError(f"--shard-tokens must be >= 1, got {shard_tokens}")
    if not files:
        raise UserError("no input files to pack")
    start, stop = job_share(len(files), num_jobs, job_index)
    mine = list(files[start:stop])
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a directory; with --shard-tokens"
                        " --out names the directory of shards")
    job_manifest = out_dir / job_manifest_name(job_index, num_jobs)
    for path in (job_manifest, out_dir / MANIFEST_NAME):
        if any(os.path.realpath(path) == os.path.realpath(f.path) for f in files):
            raise UserError(f"output {path} is an input: choose another --out directory")
    this_run = Manifest(
        tokenizer.fingerprint(), tokenizer.vocab_size, tokenizer.eod_id,
        token_dtype(tokenizer.vocab_size).name, shard_tokens,
        tuple(f.to_json() for f in files), num_jobs, job_index, (start, stop), (),
        field, on_bad_line,
    )  # fmt: skip
    _refuse_another_pack(out_dir, this_run)
    created = not out_dir.exists()
    make_parent_dirs(job_manifest)
    started = time.perf_counter()
    tally = Tally()
    stage = out_dir / f".staging-{job_manifest.stem}-{os.getpid()}"
    try:
        stage.mkdir()
    except OSError as e:
        raise output_error(stage, e) from None
    writer = ShardWriter(stage, job_index, shard_tokens, tokenizer)
    try:
        if mine:
            for tokens, lengths in tokenized_documents(
                mine, tokenizer, field=field, workers=workers, batch_docs=batch_docs,
                progress=progress, on_bad_line=on_bad_line, tally=tally,
            ):  # fmt: skip
                writer.add_documents(tokens, lengths)
        shards = writer.finish()
        if mine and not shards:
            raise tally.nothing_packed([f.path for f in mine], records_of(mine))
        inputs = [f.path for f in files] + list(getattr(tokenizer, "files", ()))
        _move_into_place(stage, out_dir, shards, inputs)
    except BaseException:
        writer.abort()
        shutil.rmtree(stage, ignore_errors=True)
        if created:  # a folder this run made for nothing: gone again (rmdir: if empty)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    manifest = replace(this_run, shards=tuple(shards))
    manifest.write(job_manifest)
    _remove_stale_shards(out_dir, job_index, len(shards))
    written = [job_manifest]
    if num_jobs == 1:  # nothing to wait for: this job's manifest is the whole dataset's
        replace(manifest, job=None, job_inputs=None).write(out_dir / MANIFEST_NAME)
        written.append(out_dir / MANIFEST_NAME)
    return PackSummary(
        tuple(f.path for f in mine), tuple(written), manifest.n_docs,
        manifest.n_tokens, tally.n_empty, sum(f.path.stat().st_size for f in mine),
        manifest.dtype, time.perf_counter() - started, tuple(tally.bad), tally.n_bad,
        n_shards=len(shards), records=records_of(mine),
    )  # fmt: skip


def _refuse_another_pack(out_dir: Path, this_run: Manifest) -> None:
    """Before any work: ``out_dir`` may hold this pack's jobs (run again, they write the
    same shards) or, for a single job, a single-job pack it replaces whole; never
    another pack's jobs, whose shards this job would replace."""
    if not out_dir.is_dir():
        return
    found = [path for _, path in job_manifests(out_dir).values()]
    if (out_dir / MANIFEST_NAME).exists():
        found.append(out_dir / MANIFEST_NAME)
    for path in found:
        other = read_manifest(path)
        key = ("num_jobs" if other.num_jobs != this_run.num_jobs else
               None if this_run.num_jobs == 1 else differing_key(other, this_run))
        if key is not None:
            raise UserError(
                f"--out {out_dir}: holds a sharded pack made otherwise ({path} records"
                f" another {key}); this job would replace its shards. Choose another --out"
                " directory, or remove that pack first")


def _remove_stale_shards(out_dir: Path, job: int, kept: int) -> None:
    """Remove this job's shards numbered ``kept`` and up, left by an earlier run that wrote
    more of them: its manifest, now replaced, was the last to name them. One still named
    by another job's manifest (of an abandoned run with other job counts) is left alone."""
    named: set[str] = set()
    for other_job, (_, path) in job_manifests(out_dir).items():
        if other_job != job:
            with contextlib.suppress(UserError):
                named.update(entry.prefix for entry in read_manifest(path).shards)
    index = kept
    while (prefix := shard_prefix(job, index)) and any(p.exists() for p in pack_paths(
            out_dir / prefix)):
        if prefix not in named:
            for path in pack_paths(out_dir / prefix):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        index += 1


def _move_into_place(stage: Path, out_dir: Path, shards: list[ShardEntry],
                     inputs: list[Path]) -> None:
    """Rename the finished shards from ``stage`` into ``out_dir`` (one file system, so
    each rename is atomic); a file of another kind, or an input, under a shard's name
    is refused before any is moved."""
    moves = []
    for entry in shards:
        pairs = zip(pack_paths(stage / entry.prefix), pack_paths(out_dir / entry.prefix),
                    (PACKED_BIN, PACKED_IDX), strict=True)
        moves.extend(pairs)
    check_outputs({dst: kind for _, dst, kind in moves}, inputs)
    for src, dst, _ in moves:
        os.replace(src, dst)
    fsync_dir(out_dir)
