"""The safetensors file format, read and written with torch alone.

Written here rather than taken from the ``safetensors`` package so that export and import
need no extra dependency; the format is small and fully specified:

- 8 bytes: little-endian unsigned length N of the header;
- N bytes: a UTF-8 JSON object ``{name: {"dtype": "F32", "shape": [...],
  "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, padded with spaces;
- the tensors' raw little-endian bytes, offsets relative to the end of the header, packed
  without gaps or overlaps.

Nothing in a safetensors file is executed, which is why import prefers it to pickles.
"""

from __future__ import annotations

import json
import mmap
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# The reference implementation refuses larger headers; so do we, before allocating one.
_MAX_HEADER = 100_000_000
_ALIGN = 8

if sys.byteorder != "little":  # raw bytes are written as the host lays them out
    raise ImportError("llm_gym.hf.safetensors supports little-endian hosts only")


def save_file(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` to ``path`` (atomically). Tensors must not share memory."""
    items = []
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {tensor.dtype} has no safetensors name")
        items.append((name, tensor.detach().to("cpu").contiguous()))
    # Widest elements first: with the header padded to 8 bytes, every tensor then starts
    # at a multiple of its element size, so readers can map it without copying.
    items.sort(key=lambda item: (-item[1].element_size(), item[0]))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, tensor in items:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % _ALIGN)
    with atomic_output(Path(path), "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, tensor in items:
            if tensor.numel():
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def load_file(path: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of ``path`` (each a fresh CPU tensor); ``UserError`` if malformed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            header, start = _read_header(f, size, path)
            # Copy-on-write map: torch wants a writable buffer; nothing reaches the file.
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    with mapped:
        return {name: _tensor(mapped, start, *entry) for name, entry in header.items()}


def _tensor(
    mapped: mmap.mmap, start: int, dtype: torch.dtype, shape: list[int], begin: int, end: int
) -> torch.Tensor:
    if begin == end:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(mapped, dtype=torch.uint8, count=end - begin, offset=start + begin)
    # clone: an aligned copy that outlives the map (the view dies with this call, so the
    # map can close), then viewed as the stored dtype.
    return raw.clone().view(dtype).reshape(shape)


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of ``path``'s header."""
    path = Path(path)
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0] if path.stat().st_size >= 8 else 0
        raw = json.loads(f.read(min(length, _MAX_HEADER)) or b"{}")
    return dict(raw.get("__metadata__") or {}) if isinstance(raw, dict) else {}


def _read_header(f, size: int, path: Path):
    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid safetensors file: {why}")

    if size < 8:
        raise bad("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > min(_MAX_HEADER, size - 8):
        raise bad(f"header length {length} exceeds the file")
    try:
        raw = json.loads(f.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise bad("header is not a JSON object")
    raw.pop("__metadata__", None)
    entries = {}
    for name, entry in raw.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r}: unknown dtype or malformed entry {entry!r}") from None
        numel = 1
        for d in shape:
            numel *= d
        if min(shape, default=0) < 0 or end - begin != numel * dtype.itemsize:
            raise bad(f"tensor {name!r}: offsets {begin}..{end} do not hold shape {shape}")
        entries[name] = (dtype, shape, begin, end)
    # The data must be covered exactly: no gaps, overlaps or bytes past the last tensor.
    expected = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if begin != expected:
            raise bad(f"tensor data overlap or gap at byte {begin} (expected {expected})")
        expected = end
    if 8 + length + expected != size:
        raise bad(f"data ends at byte {8 + length + expected}, file has {size}")
    return entries, 8 + length
