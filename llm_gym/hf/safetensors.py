"""Safetensors files: read and written with the ``safetensors`` package (what transformers
uses), behind a strict check of the header that refuses a malformed file, naming it.

The format: 8 bytes, the little-endian length N of the header; N bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``; then the tensors' raw bytes, offsets relative to the end of the header,
packed without gaps or overlaps. Nothing in a safetensors file is executed, which is why
import prefers it to pickles.

Why a check of our own before the package reads a file: the package refuses 35 of the 36
malformed headers of tests/hf/test_safetensors.py itself, but accepts the 36th (a zero-size
tensor whose other sizes overflow torch's 64-bit strides), and its messages name neither
the file nor, for most, the tensor ("invalid offset for tensor `b`" where we say which
tensor it overlaps). ``read_header`` also serves the import's check of config.json against
the weights, which must not read any tensor data.

The file is opened once (a regular file, checked on the open descriptor, so a FIFO cannot
block the read): the header is checked on that descriptor, and the package maps the same
open file (``/proc/self/fd/N`` on Linux), so a file swapped for another between the check
and the read is never the one read.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import safetensors
import safetensors.torch
import torch

from llm_gym.errors import UserError
from llm_gym.fileio import AtomicFile, open_input, output_error, same_file_path

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The package refuses larger headers; so do we, before allocating one.
_MAX_HEADER = 100_000_000

if sys.byteorder != "little":  # the format is little-endian; torch lays tensors out natively
    raise ImportError("llm_gym.hf.safetensors supports little-endian hosts only")


def save_file(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` to ``path`` atomically (a temporary file renamed over it); a full
    disk or an unwritable directory is an ``OutputError`` naming ``path``, which is then
    untouched. Tensors must not share memory (a tied weight is saved once)."""
    items = {}
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {tensor.dtype} has no safetensors name")
        items[name] = tensor.detach().to("cpu").contiguous()
    target = AtomicFile(Path(path), "wb")
    try:
        # The package writes the temporary file by name: it truncates and fills the
        # inode ``target`` holds open, so the commit's fsync covers what it wrote.
        safetensors.torch.save_file(items, target.tmp,
                                    metadata=dict(metadata) if metadata else None)
    except safetensors.SafetensorError as exc:  # I/O errors come back as this, ENOSPC too
        target.discard()
        raise output_error(target.path, OSError(None, _reason(exc))) from None
    except BaseException:
        target.discard()
        raise
    target.commit()


def _reason(exc: Exception) -> str:
    # "Error while serializing: I/O error: No space left on device (os error 28)"
    return str(exc).removeprefix("Error while serializing: ").removeprefix("I/O error: ")


class TensorInfo(NamedTuple):
    """One header entry: where a tensor's bytes lie, relative to the end of the header."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


class Header(NamedTuple):
    tensors: dict[str, TensorInfo]  # in file order of their data
    metadata: dict[str, str]
    data_start: int  # byte offset of the first tensor's data in the file


def read_header(path: Path) -> Header:
    """``path``'s header, every entry checked against the file; reads no tensor data.

    What this accepts allocates at most the file's size when loaded: each tensor's bytes
    lie inside the file, no two overlap, and together they cover the data exactly.
    """
    with _opened(Path(path)) as (f, header):
        return header


def load_file(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path``, memory-mapped copy-on-write by the ``safetensors``
    package (writing to one never reaches the file); ``UserError`` if malformed."""
    path = Path(path)
    with _opened(path) as (f, header):
        try:
            with safetensors.safe_open(str(same_file_path(f, path)), framework="pt") as opened:
                tensors = {name: opened.get_tensor(name) for name in header.tensors}
        except safetensors.SafetensorError as exc:
            raise UserError(f"{path}: not a valid safetensors file: {exc}") from None
    for name, info in header.tensors.items():  # the file changed in place since the check
        if tensors[name].dtype != info.dtype or tuple(tensors[name].shape) != info.shape:
            raise UserError(f"{path}: tensor {name!r} changed while the file was read")
    return tensors


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of ``path``'s header."""
    return read_header(path).metadata


@contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, Header]]:
    """``path`` open (a regular file, checked on the open descriptor) and its checked header."""
    with open_input(path, "a safetensors file") as f:
        try:
            header = _read_header(f, os.fstat(f.fileno()).st_size, path)
        except OSError as exc:
            raise UserError(f"{path}: cannot read: {exc}") from None
        yield f, header


# Torch sizes and byte counts are signed 64-bit: a larger dimension cannot be a tensor.
_MAX_SIZE = 2**63 - 1


def _read_header(f: BinaryIO, size: int, path: Path) -> Header:
    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid safetensors file: {why}")

    if size < 8:
        raise bad("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > min(_MAX_HEADER, size - 8):
        raise bad(f"header length {length} exceeds the file ({size} bytes) or "
                  f"{_MAX_HEADER} bytes")
    try:
        raw = json.loads(f.read(length).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise bad(f"tensor {exc.args[0]!r} appears twice in the header") from None
    except RecursionError:  # json recurses per nesting level: 100000 "[" exhaust the stack
        raise bad("header is nested too deeply to be a safetensors header") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, int digits
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise bad("header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ is not an object of strings")
    entries = {name: _entry(name, entry, bad) for name, entry in raw.items()}
    # The data must be covered exactly: no gaps, overlaps or bytes past the last tensor.
    ordered = sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end))
    expected, previous = 0, None
    for name, info in ordered:
        if info.begin < expected:
            raise bad(f"tensor {name!r}: data at bytes {info.begin}..{info.end} overlaps "
                      f"tensor {previous!r} (which ends at {expected})")
        if info.begin > expected:
            raise bad(f"tensor {name!r}: data starts at byte {info.begin}, leaving a gap "
                      f"after byte {expected}")
        expected, previous = info.end, name
    data_size = size - 8 - length
    if expected != data_size:
        last = f"tensor {previous!r}: data ends" if previous else "the header's tensors end"
        raise bad(f"{last} at byte {expected} but the file holds {data_size} bytes of data")
    return Header(dict(ordered), dict(metadata), 8 + length)


def _entry(name: str, entry: Any, bad: Callable[[str], UserError]) -> TensorInfo:
    if not isinstance(entry, dict):
        raise bad(f"tensor {name!r}: entry is not an object: {_short(entry)}")
    dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise bad(f"tensor {name!r}: unknown dtype {_short(dtype_name)} "
                  f"(known: {', '.join(DTYPES)})")
    dtype = DTYPES[dtype_name]
    # type() is int: json gives floats for 2.0 and 1e30, and bools are ints to Python.
    if not isinstance(shape, list) or not all(
        type(d) is int and 0 <= d <= _MAX_SIZE for d in shape
    ):
        raise bad(f"tensor {name!r}: shape {_short(shape)} is not a list of sizes "
                  f"0..{_MAX_SIZE}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(
        type(o) is int and 0 <= o <= _MAX_SIZE for o in offsets
    ):
        raise bad(f"tensor {name!r}: data_offsets {_short(offsets)} is not [begin, end] "
                  f"with 0 <= begin <= end")
    # Torch computes strides from the sizes, zeros counted as ones: they must fit too.
    if math.prod(max(d, 1) for d in shape) * dtype.itemsize > _MAX_SIZE:
        raise bad(f"tensor {name!r}: shape {_short(shape)} is too large for a tensor")
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise bad(f"tensor {name!r}: offsets {begin}..{end} do not hold shape {shape} of "
                  f"{dtype_name} ({nbytes} bytes)")
    return TensorInfo(dtype, tuple(shape), begin, end)


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
