"""Our safetensors reader and writer: every dtype, odd shapes, and malformed files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.hf.safetensors import load_file, read_metadata, save_file


def sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f64": torch.randn(2, generator=g, dtype=torch.float64),
        "f16": torch.randn(7, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "i64": torch.arange(-3, 4),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
        "strided": torch.randn(4, 6, generator=g).t(),  # not contiguous
    }


def test_round_trip_keeps_values_dtypes_and_shapes(tmp_path: Path) -> None:
    tensors = sample()
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name], tensor), name
    assert read_metadata(tmp_path / "x.safetensors") == {"format": "pt"}


def test_layout_is_aligned_and_gapless(tmp_path: Path) -> None:
    save_file(sample(), tmp_path / "x.safetensors")
    raw = (tmp_path / "x.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0
    header = json.loads(raw[8 : 8 + length])
    spans = sorted(tuple(e["data_offsets"]) for e in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    itemsize = {"F64": 8, "F32": 4, "I64": 8}
    for entry in header.values():
        assert entry["data_offsets"][0] % itemsize.get(entry["dtype"], 1) == 0


def _write(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "length", "match"),
    [
        ({}, b"", 10**6, "header length"),
        ("[1]", b"", None, "not a JSON object"),
        ({"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, b"1234", None,
         "unknown dtype"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"1234", None,
         "do not hold shape"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"12345678", None,
         "gap"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"12345678", None,
         "file has"),
    ],
)
def test_malformed_files_are_user_errors_naming_the_file(
    tmp_path: Path, header: object, data: bytes, length: int | None, match: str
) -> None:
    path = _write(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(UserError, match=match) as info:
        load_file(path)
    assert str(path) in str(info.value)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="shorter"):
        load_file(tmp_path / "short")
    with pytest.raises(UserError, match="cannot read"):
        load_file(tmp_path / "missing.safetensors")
