"""JSONL compressed with gzip or zstd, read as a stream of lines with bounded memory.

A damaged stream is a UserError naming the file, the compressed byte offset by which the
decoder found the damage (it lies at or before it) and how many whole lines were read.
A zstd stream cut short inside a frame is reported too: zstandard's own stream reader
ends such a stream silently, so frames are decoded here one by one and a frame still
open at the end of the file is an error.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from llm_gym.data.jsonl_texts import read_batches
from llm_gym.data.sources.batch import TextBatch
from llm_gym.data.sources.extras import require
from llm_gym.errors import UserError

_CHUNK = 1 << 16  # compressed bytes fed to the decoder at a time


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every zstd frame of ``raw``, in order; EOFError when the
    file ends inside a frame."""

    def __init__(self, raw: BinaryIO, zstd: Any) -> None:
        self._raw, self._zstd = raw, zstd
        self._decoder: Any = None
        self._pending = b""  # compressed bytes after the end of the last frame
        self._out, self._pos = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos == len(self._out):
            chunk, self._pending = self._pending or self._raw.read(_CHUNK), b""
            if not chunk:
                if self._decoder is not None:
                    raise EOFError("the file ends inside a zstd frame (truncated?)")
                return 0
            if self._decoder is None:
                self._decoder = self._zstd.ZstdDecompressor().decompressobj()
            self._out, self._pos = memoryview(self._decoder.decompress(chunk)), 0
            if self._decoder.eof:
                self._pending, self._decoder = self._decoder.unused_data, None
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n


def _decompressed(raw: BinaryIO, fmt: str) -> tuple[BinaryIO, tuple[type[BaseException], ...]]:
    """The decompressed stream of ``raw`` and the exceptions that mean it is damaged."""
    if fmt == "jsonl.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), (OSError, EOFError, zlib.error)
    zstd = require("zstandard", "a zstd-compressed JSONL file (.zst)")
    frames = _ZstdFrames(raw, zstd)
    return io.BufferedReader(frames, 1 << 20), (zstd.ZstdError, EOFError)  # type: ignore[return-value]


class _CountedLines:
    """The lines of ``stream``, counting the whole ones handed on: where a damaged stream
    stops, the count is the last good line, wherever the batch it was in had got to."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream, self.count = stream, 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self.count += 1
            yield line


def compressed_jsonl_batches(raw: BinaryIO, path: Path, fmt: str,
                             batch_docs: int) -> Iterator[TextBatch]:
    """Batches of lines of the compressed JSONL file open as ``raw``."""
    stream, damaged = _decompressed(raw, fmt)
    kind = "gzip" if fmt == "jsonl.gz" else "zstd"
    lines = _CountedLines(stream)
    position = 0
    batches = read_batches(lines, batch_docs)  # type: ignore[arg-type]
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except damaged as e:
            # A decoder notices damage at or after it: the bytes read so far bound it.
            raise UserError(
                f"{path}: damaged {kind} stream, found by compressed byte {raw.tell()} (the"
                f" damage lies at or before it; {lines.count} whole lines read before): {e}"
            ) from None
        moved, position = raw.tell() - position, raw.tell()
        yield TextBatch(str(path), "line", batch.first_line, moved, lines=batch.lines)
