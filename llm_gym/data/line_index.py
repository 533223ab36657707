"""A byte-offset index over a JSONL file, so training can read document ``i`` directly.

Building scans the file once at disk speed: newlines are found with numpy over bounded
chunks, never with a per-line Python loop, and the offsets are streamed to the output,
so memory stays flat whatever the file size. The index is written to a temporary file
beside the target and moved into place with ``os.replace``: a reader sees the old index
or the new one, never a torn one, and a failed build leaves nothing behind.

On-disk format, version 2 (all little-endian)::

    offset  size  field
    0       8     magic b"LGIDX\\0\\0\\0"
    8       4     format version, uint32 (2)
    12      4     flags, uint32: bit 0 = lines were parsed as JSON (validate),
                  bit 1 = bad lines were skipped rather than fatal
    16      8     source size in bytes, uint64
    24      8     source mtime in nanoseconds, int64
    32      16    blake2b-128 over the source size, its first 64 KiB and last 64 KiB
    48      8     N, the number of indexed lines, uint64
    56      8     empty or whitespace-only lines skipped, uint64
    64      8     bad lines skipped (validate with on_bad_line="skip"), uint64
    72      4     CRC-32 of the whole source, uint32
    76      4     reserved, zero
    80      16*N  N pairs (start, end), uint64: ``source[start:end]`` is the line
                  without its ``\\n`` or ``\\r\\n``

Ends are stored rather than taken from the next line's start because skipped empty and
bad lines sit between documents; with them, ``span`` needs no look at the data. The
index file must be exactly ``80 + 16 * N`` bytes long, which is how truncation shows.
A UTF-8 byte-order mark at the start of the source is not part of line 1.

Staleness: size, the first and last 64 KiB, and the mtime are compared first (cheap), then
the CRC-32 of the whole source (one read at ~4 GB/s from the page cache), so an edit of the
same size in the middle of the file, its mtime restored (``cp -p``, ``rsync -t``), is still
caught. Version 1 indexes had no CRC: they read as corrupt, so they are rebuilt (or
refused, naming the rebuild command) with the options they were built with.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from llm_gym.data.file_kinds import LINE_INDEX, MAGIC_LINE_INDEX, check_outputs
from llm_gym.data.line_scan import (
    DEFAULT_CHUNK_SIZE,
    BadLine,
    LineScanner,
)
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input

MAGIC = MAGIC_LINE_INDEX
VERSION = 2
FLAG_VALIDATED = 1
FLAG_SKIP_BAD = 2
_HEADER = struct.Struct("<8sIIQq16sQQQII")
HEADER_SIZE = _HEADER.size  # 80, a multiple of 8 so the offsets can be memory-mapped as uint64
_FIXED = struct.Struct("<8sII")  # magic, version, flags: the same in every version
FINGERPRINT_BYTES = 64 << 10
_READ_BYTES = 4 << 20
@dataclass
class IndexSummary:
    path: Path
    lines: int
    empty_lines: int
    bad_lines: list[BadLine] = field(default_factory=list)  # the first MAX_BAD_LINES_KEPT
    bad_count: int = 0
    bytes: int = 0
    seconds: float = 0.0


def default_index_path(source: Path) -> Path:
    """``data.jsonl`` -> ``data.jsonl.idx``, beside the data."""
    source = Path(source)
    return source.with_name(source.name + ".idx")


def build_line_index(
    source: Path,
    out: Path | None = None,
    *,
    validate: bool = False,
    on_bad_line: Literal["fail", "skip"] = "fail",
    progress: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> IndexSummary:
    """Index every non-empty line of ``source`` and atomically write the index to ``out``.

    ``validate`` parses each line as UTF-8 JSON; a bad line raises a ``UserError`` naming
    its line number, or with ``on_bad_line="skip"`` is left out and listed in the summary.
    Without ``validate`` only cheap checks run: NUL bytes anywhere, UTF-8 in the first
    64 KiB. ``chunk_size`` bounds the memory used (tests make it tiny).
    """
    if on_bad_line not in ("fail", "skip"):
        raise ValueError(f"on_bad_line must be 'fail' or 'skip', not {on_bad_line!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    source = Path(source)
    out = default_index_path(source) if out is None else Path(out)
    check_outputs({out: LINE_INDEX}, [source])
    started = time.perf_counter()
    with _open_source(source) as f, _open_source(source, buffering=-1) as probe:
        before = os.fstat(f.fileno())
        if before.st_size == 0:
            raise UserError(f"{source}: the file is empty; expected one JSON document per line")
        head = probe.read(FINGERPRINT_BYTES)
        if not validate:
            _check_head(source, head, before.st_size)
        fingerprint = _fingerprint(probe, before.st_size)
        scan = LineScanner(source, probe, chunk_size, validate, on_bad_line)
        scan.carry_start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        flags = FLAG_VALIDATED * validate | FLAG_SKIP_BAD * (on_bad_line == "skip")
        # Whoever may read the data may read its index (mkstemp alone would say 0600).
        file_mode = stat.S_IMODE(before.st_mode) & 0o666 | 0o600
        with (
            atomic_output(out, file_mode=file_mode) as w,
            _progress_bar(progress, source, before) as bar,
        ):
            w.write(bytes(HEADER_SIZE))  # placeholder: the counts are known only at the end
            scan.run(f, w, bar)
            after = os.fstat(f.fileno())
            source_id = before.st_size, before.st_mtime_ns
            if (after.st_size, after.st_mtime_ns) != source_id or scan.base != before.st_size:
                raise UserError(f"{source}: the file changed while it was being indexed; retry")
            if scan.lines == 0:
                what = "valid" if scan.bad_count else "non-empty"
                raise UserError(f"{source}: no {what} lines; expected one JSON document per line")
            counts = scan.lines, scan.empty, scan.bad_count
            w.seek(0)
            w.write(_HEADER.pack(MAGIC, VERSION, flags, *source_id, fingerprint, *counts,
                                 scan.crc, 0))
    return IndexSummary(
        path=out,
        lines=scan.lines,
        empty_lines=scan.empty,
        bad_lines=scan.bad,
        bad_count=scan.bad_count,
        bytes=before.st_size,
        seconds=time.perf_counter() - started,
    )


def _check_head(source: Path, head: bytes, size: int) -> None:
    """Catch the usual wrong file (binary, compressed, another encoding) before indexing."""
    if head.startswith(b"\x1f\x8b"):
        raise UserError(f"{source}: the file is gzip-compressed; decompress it first")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) >= size)
    except UnicodeDecodeError as e:
        line = head.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"{source} line {line}: invalid UTF-8 at byte offset {e.start}; JSONL must be UTF-8"
        ) from None


def _fingerprint(f: IO[bytes], size: int) -> bytes:
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    f.seek(0)
    h.update(f.read(FINGERPRINT_BYTES))
    f.seek(max(0, size - FINGERPRINT_BYTES))
    h.update(f.read(FINGERPRINT_BYTES))
    return h.digest()


def _crc32(f: IO[bytes]) -> int:
    crc = 0
    f.seek(0)
    while block := f.read(_READ_BYTES):
        crc = zlib.crc32(block, crc)
    return crc


@contextmanager
def _open_source(source: Path, buffering: int = 0) -> Iterator[IO[bytes]]:
    # Unbuffered by default: readinto goes straight into the scanner's buffer.
    with open_input(source, "the JSONL file to index", buffering=buffering) as f:
        yield f


def _progress_bar(enabled: bool, source: Path, st: os.stat_result) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    bar.add_task(f"indexing {source.name}", total=st.st_size)
    return bar


class CorruptIndexError(UserError):
    """An index we wrote but cannot use as is (truncated, older format): rebuilding fixes it.

    ``flags`` are the build flags when the header still tells them, so a rebuild can keep
    how the index was built (validated, bad lines skipped).
    """

    def __init__(self, message: str, flags: int | None = None) -> None:
        super().__init__(message)
        self.flags = flags

    @property
    def build_options(self) -> dict[str, Any]:
        if self.flags is None:
            return {}
        return {"validate": bool(self.flags & FLAG_VALIDATED),
                "on_bad_line": "skip" if self.flags & FLAG_SKIP_BAD else "fail"}


class LineIndex:
    """A built index, memory-mapped: ``span(i)`` is where line ``i`` lies in ``source``."""

    def __init__(self, path: Path, source: Path, header: tuple, offsets: np.ndarray) -> None:
        self.path, self.source, self.offsets = path, source, offsets
        self.flags, self.source_size, self.mtime_ns, self.fingerprint = header[2:6]
        self.empty_lines, self.bad_lines, self.crc = header[7:10]

    @classmethod
    def open(cls, path: Path, source: Path) -> LineIndex:
        path, source = Path(path), Path(source)
        if not path.exists():
            raise UserError(f"{path}: no such index; build it with `llm_gym tools index`")
        try:
            with open_input(path, "a line index") as f:  # a FIFO would block open()
                size = os.fstat(f.fileno()).st_size
                head = f.read(HEADER_SIZE)
        except OSError as e:
            raise UserError(f"{path}: cannot read the index: {e.strerror}") from None
        if head[: len(MAGIC)] != MAGIC[: len(head)]:
            raise UserError(f"{path}: not an llm_gym line index (wrong magic bytes)")
        if len(head) >= _FIXED.size and (fixed := _FIXED.unpack_from(head))[1] != VERSION:
            raise CorruptIndexError(
                f"{path}: unsupported index format version {fixed[1]} "
                f"(this llm_gym reads version {VERSION}); rebuild it",
                flags=fixed[2] if fixed[1] == 1 else None,
            )
        if len(head) < HEADER_SIZE:
            raise CorruptIndexError(
                f"{path}: truncated index ({size} bytes, header alone is {HEADER_SIZE})"
            )
        header = _HEADER.unpack(head)
        lines = header[6]
        expected = HEADER_SIZE + 16 * lines
        if size != expected:
            what = "truncated" if size < expected else "has trailing bytes"
            raise CorruptIndexError(
                f"{path}: index {what}: {size} bytes, expected {expected} for {lines} lines"
            )
        if lines == 0:
            offsets = np.zeros((0, 2), dtype="<u8")
        else:
            offsets = np.memmap(path, dtype="<u8", mode="r", offset=HEADER_SIZE, shape=(lines, 2))
        return cls(path, source, header, offsets)

    @property
    def validated(self) -> bool:
        return bool(self.flags & FLAG_VALIDATED)

    @property
    def on_bad_line(self) -> Literal["fail", "skip"]:
        return "skip" if self.flags & FLAG_SKIP_BAD else "fail"

    def __len__(self) -> int:
        return len(self.offsets)

    def span(self, i: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` of line ``i`` in the source, without its terminator."""
        n = len(self.offsets)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"line {i} out of range for {n} lines of {self.source}")
        start, end = self.offsets[j]
        return int(start), int(end)

    def line_number(self, i: int) -> int:
        """The 1-based physical line number of indexed line ``i``, for error messages."""
        start, _ = self.span(i)
        if self.empty_lines == 0 and self.bad_lines == 0:
            return (i + len(self) if i < 0 else i) + 1
        count, pos = 0, 0
        with open(self.source, "rb") as f:  # counts newlines before start, a chunk at a time
            while pos < start and (block := f.read(min(start - pos, DEFAULT_CHUNK_SIZE))):
                count += block.count(b"\n")
                pos += len(block)
        return count + 1

    def is_stale(self, source: Path | None = None) -> str | None:
        """Why the index no longer describes ``source`` (default: its own), or None."""
        source = self.source if source is None else Path(source)
        if not source.exists():
            return f"{source} no longer exists"
        with open_input(source, "the indexed JSONL file") as f:
            st = os.fstat(f.fileno())
            if st.st_size != self.source_size:
                return (
                    f"{source} changed size: {self.source_size} bytes when indexed,"
                    f" now {st.st_size}"
                )
            if _fingerprint(f, st.st_size) != self.fingerprint:
                return f"{source} changed: its first or last 64 KiB differ from when indexed"
            if st.st_mtime_ns != self.mtime_ns:
                return (
                    f"{source} was modified after indexing (mtime {self.mtime_ns / 1e9:.6f}"
                    f" when indexed, now {st.st_mtime_ns / 1e9:.6f})"
                )
            if _crc32(f) != self.crc:
                return (
                    f"{source} changed since it was indexed: same size and mtime, but its"
                    " content differs (CRC-32)"
                )
        return None

    def close(self) -> None:
        mm = getattr(self.offsets, "_mmap", None)
        self.offsets = np.zeros((0, 2), dtype="<u8")
        if mm is not None:
            with suppress(BufferError):  # still borrowed by a view someone holds
                mm.close()
