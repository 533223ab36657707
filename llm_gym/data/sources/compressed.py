"""JSONL compressed with gzip or zstd, read as a stream of lines with bounded memory.

A damaged stream is a UserError naming the file, the compressed byte offset where reading
stopped and the last whole line read. A zstd stream cut short inside a frame is reported
too: zstandard's own stream reader ends such a stream silently, so frames are decoded
here one by one and a frame still open at the end of the file is an error.
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


def compressed_jsonl_batches(raw: BinaryIO, path: Path, fmt: str,
                             batch_docs: int) -> Iterator[TextBatch]:
    """Batches of lines of the compressed JSONL file open as ``raw``."""
    stream, damaged = _decompressed(raw, fmt)
    kind = "gzip" if fmt == "jsonl.gz" else "zstd"
    last_line, position = 0, 0
    batches = read_batches(stream, batch_docs)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except damaged as e:
            raise UserError(
                f"{path}: damaged {kind} stream near compressed byte {raw.tell()}"
                f" (after line {last_line}, the last whole line read): {e}"
            ) from None
        last_line = batch.first_line + len(batch.lines) - 1
        moved, position = raw.tell() - position, raw.tell()
        yield TextBatch(str(path), "line", batch.first_line, moved, lines=batch.lines)
