"""The line scanner behind ``build_line_index``: newline positions in bounded chunks.

numpy finds the newlines of each chunk; Python runs per line only where it must
(validating, or looking into the rare line that begins with whitespace). Spans of the
lines kept are streamed to the output as (start, end) uint64 pairs.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from llm_gym.errors import UserError

# 4 MiB keeps the chunk, its newline mask and the offsets in L2/L3 cache; 32 MiB chunks
# measured ~2x slower on the same machine because every pass went out to DRAM.
DEFAULT_CHUNK_SIZE = 4 << 20
MAX_BAD_LINES_KEPT = 1000  # a summary, not a copy of a broken file: the count is exact
_BLANK = b" \t\r"
_BLANK_CODES = np.frombuffer(_BLANK, np.uint8)


# How a Python caller asks to leave bad lines out; the CLI swaps in its flag.
PYTHON_SKIP_HINT = "on_bad_line='skip'"
CLI_SKIP_HINT = "--on-bad-line skip"
# A JSON escape of a UTF-16 surrogate: the only way a lone one gets into a parsed string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BadLine(NamedTuple):
    line: int  # 1-based physical line number in the source, counting empty lines
    reason: str  # names the byte offset where that helps (invalid UTF-8)


class BadLineError(UserError):
    """A line that is not a usable document, fatal because bad lines were not to be skipped.

    ``skip_hint`` says how to skip them instead: the Python argument by default, the
    command-line flag once the CLI has swapped it in (``with_skip_hint``).
    """

    def __init__(self, where: str, reason: str, skip_hint: str = PYTHON_SKIP_HINT) -> None:
        self.where, self.reason, self.skip_hint = where, reason, skip_hint
        super().__init__(f"{where}: {reason} ({skip_hint} leaves such lines out)")

    def with_skip_hint(self, skip_hint: str) -> BadLineError:
        return BadLineError(self.where, self.reason, skip_hint)

    def __reduce__(self) -> tuple:  # crosses from pack's worker processes intact
        return BadLineError, (self.where, self.reason, self.skip_hint)


def may_hold_surrogates(raw: bytes) -> bool:
    """Cheap test before the exact one: can parsing ``raw`` give a string with a surrogate?"""
    return _SURROGATE_ESCAPE.search(raw) is not None


def unpaired_surrogate(text: str, field: str | None = None) -> str | None:
    """Why ``text`` (the string ``field``, or a whole JSON document) cannot be encoded to
    UTF-8: an unpaired surrogate, which json.loads accepts from a ``\\ud800`` escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        at = f"in field {field!r} at character {e.start + 1}" if field else "in a JSON string"
        return (
            f"invalid Unicode: unpaired surrogate U+{ord(text[e.start]):04X} {at}"
            " (JSON escapes \\uD800-\\uDFFF must come in pairs)"
        )
    return None


class LineScanner:
    """The streaming state of one build: where the unfinished line began, and counts.

    Each chunk is read into ``buf[1:]``; ``buf[0]`` keeps the previous chunk's last byte,
    so the byte before any newline (a possible ``\\r``) is always at hand.
    """

    def __init__(
        self, source: Path, probe: IO[bytes], chunk_size: int, validate: bool, on_bad: str
    ) -> None:
        self.source, self.probe, self.validate, self.on_bad = source, probe, validate, on_bad
        self.buf = bytearray(chunk_size + 1)
        self.arr = np.frombuffer(self.buf, np.uint8)
        self.mv = memoryview(self.buf)
        self.mask = np.empty(chunk_size, dtype=bool)
        self.wmask = np.empty(chunk_size // 8, dtype=bool)
        self.base = 0  # source offset of buf[1]
        self.newlines = 0  # newlines before buf[1], i.e. physical lines completed
        self.carry_start = 0  # start of the line not yet ended by a newline
        self.carry_bytes = bytearray()  # its bytes read so far (validate only)
        self.lines = self.empty = self.bad_count = 0
        self.bad: list[BadLine] = []
        self.crc = 0  # CRC-32 of every byte read: lets a reader tell any edit (6 GB/s)

    def run(self, f: IO[bytes], out: IO[bytes], bar: Any) -> None:
        view = self.mv[1:]
        while n := f.readinto(view):
            self.crc = zlib.crc32(view[:n], self.crc)
            self._chunk(n, out)
            if bar is not None:
                bar.advance(0, n)
        if self.carry_start < self.base:  # a last line without a trailing newline
            end = self.base - int(self.arr[0] == 13)
            self._emit(np.array([self.carry_start]), np.array([end]), self.newlines + 1, out)

    def _chunk(self, n: int, out: IO[bytes]) -> None:
        base, chunk = self.base, self.arr[1 : n + 1]
        nl = self._newlines(n)
        if not self.validate and (nul := self.buf.find(b"\0", 1, n + 1)) >= 0:
            line = self.newlines + int(np.searchsorted(nl, nul - 1)) + 1
            raise UserError(
                f"{self.source} line {line}: NUL byte at byte offset {base + nul - 1}; "
                "this looks like a binary file, not JSONL"
            )
        if nl.size:
            ends = nl + base
            starts = np.empty_like(ends)
            starts[0] = self.carry_start
            starts[1:] = ends[:-1] + 1
            # arr is shifted by one, so arr[nl] is the byte just before each newline.
            self._emit(starts, ends - (self.arr[nl] == 13), self.newlines + 1, out)
            self.newlines += nl.size
            self.carry_start = int(ends[-1]) + 1
            if self.validate:
                self.carry_bytes = bytearray(self.mv[1 + self.carry_start - base : 1 + n])
        elif self.validate:
            self.carry_bytes += self.mv[1 + max(self.carry_start - base, 0) : 1 + n]
        self.arr[0] = chunk[-1]
        self.base += n

    def _newlines(self, n: int) -> np.ndarray:
        """Positions of b"\\n" in the chunk. numpy's nonzero walks bools one at a time, and
        was the slowest step; newlines are sparse, so find the 8-byte words holding one
        first, then look inside only those."""
        mask = np.equal(self.arr[1 : n + 1], 10, out=self.mask[:n])
        w = n - n % 8
        words = np.flatnonzero(np.not_equal(mask[:w].view(np.uint64), 0, out=self.wmask[: w // 8]))
        rows, cols = np.nonzero(mask[:w].reshape(-1, 8)[words])
        found = words[rows] * 8 + cols
        if w < n:
            found = np.concatenate((found, w + np.flatnonzero(mask[w:])))
        return found

    def _emit(self, starts: np.ndarray, ends: np.ndarray, first_line: int, out: IO[bytes]) -> None:
        """Write the spans of lines ending in this chunk, less the empty and bad ones."""
        # Only a line that starts with whitespace can be blank, which is rare: look at
        # those few one by one rather than test every byte of every line. For a line
        # begun in an earlier chunk, arr[0] (that chunk's last byte) stands in for its
        # first byte: it is one of the line's bytes, so whitespace if the line is blank.
        first = self.arr[np.maximum(starts - self.base, -1) + 1]
        keep = ends > starts
        for j in np.flatnonzero(keep & np.isin(first, _BLANK_CODES)):
            keep[j] = not self._is_blank(int(starts[j]), int(ends[j]))
        self.empty += keep.size - int(np.count_nonzero(keep))
        if self.validate:
            for j in np.flatnonzero(keep):
                s, e = int(starts[j]), int(ends[j])
                if s >= self.base:
                    data = bytes(self.mv[1 + s - self.base : 1 + e - self.base])
                else:  # begun in earlier chunks; its \r may be the last byte carried
                    data = bytes(self.carry_bytes + self.mv[1 : 1 + max(e - self.base, 0)])
                    data = data[: e - s]
                if (reason := _check_line(data, s)) is not None:
                    keep[j] = False
                    self._bad(BadLine(first_line + int(j), reason))
        pairs = np.empty((int(np.count_nonzero(keep)), 2), dtype="<u8")
        pairs[:, 0] = starts[keep]
        pairs[:, 1] = ends[keep]
        if len(pairs):
            out.write(pairs.data)
            self.lines += len(pairs)

    def _is_blank(self, start: int, end: int) -> bool:
        self.probe.seek(start)
        while start < end:
            block = self.probe.read(min(end - start, 1 << 20))
            if not block or block.strip(_BLANK):
                return False
            start += len(block)
        return True

    def _bad(self, bad: BadLine) -> None:
        if self.on_bad == "fail":
            raise BadLineError(f"{self.source} line {bad.line}", bad.reason)
        self.bad_count += 1
        if len(self.bad) < MAX_BAD_LINES_KEPT:
            self.bad.append(bad)


def _check_line(data: bytes, offset: int) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte offset {offset + e.start}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    if may_hold_surrogates(data):
        return unpaired_surrogate(json.dumps(record, ensure_ascii=False))
    return None
