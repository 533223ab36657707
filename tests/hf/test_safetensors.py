"""Our safetensors reader and writer (the safetensors package behind a strict header check):
every dtype, odd shapes, malformed files, FIFOs, a file swapped mid-read, a full disk."""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.fileio import OutputError
from llm_gym.hf import safetensors
from llm_gym.hf.safetensors import load_file, read_header, read_metadata, save_file


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
    if isinstance(header, bytes | str):
        raw = header.encode() if isinstance(header, str) else header
    else:
        raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _f32(shape: object = (1,), offsets: object = (0, 4), dtype: object = "F32") -> dict:
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape,
            "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets}


# (header, data, header length to claim or None for the true one, message fragments).
# Every fragment must appear: the file is always named, the tensor wherever there is one.
MALFORMED = [
    ({}, b"", 10**6, ["header length 1000000 exceeds"]),
    ({}, b"", 2**64 - 1, ["header length"]),
    ("[1]", b"", None, ["not a JSON object"]),
    ("[" * 100_000, b"", None, ["nested too deeply"]),
    ('{"a": ' * 100_000, b"", None, ["nested too deeply"]),
    ("{\"a\": " + "1" * 5000 + "}", b"", None, ["not JSON"]),
    ('{"a": {"dtype": "F32"', b"", None, ["not JSON"]),
    (b"\xff\xfe", b"", None, ["not JSON"]),
    ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     '"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', b"12345678", None,
     ["'a' appears twice"]),
    ({"__metadata__": {"format": 1}}, b"", None, ["__metadata__"]),
    ({"__metadata__": [1]}, b"", None, ["__metadata__"]),
    ({"a": 5}, b"", None, ["tensor 'a'", "not an object"]),
    ({"a": _f32(dtype="F33")}, b"1234", None, ["tensor 'a'", "unknown dtype 'F33'"]),
    ({"a": _f32(dtype=None)}, b"1234", None, ["tensor 'a'", "unknown dtype None"]),
    ({"a": _f32(dtype=["F32"])}, b"1234", None, ["tensor 'a'", "unknown dtype"]),
    ({"a": _f32(shape=(2,))}, b"1234", None, ["tensor 'a'", "do not hold shape [2]"]),
    ({"a": _f32(shape=(1.0,))}, b"1234", None, ["tensor 'a'", "shape [1.0]"]),
    ({"a": _f32(shape=(True,))}, b"1234", None, ["tensor 'a'", "shape [True]"]),
    ({"a": _f32(shape=("1",))}, b"1234", None, ["tensor 'a'", "shape ['1']"]),
    ({"a": _f32(shape=(-1,))}, b"1234", None, ["tensor 'a'", "shape [-1]"]),
    ({"a": _f32(shape=(10**30,))}, b"1234", None, ["tensor 'a'", "shape [10000"]),
    ({"a": _f32(shape=(0, 2**62, 4), offsets=(0, 0))}, b"", None,
     ["tensor 'a'", "too large"]),
    ({"a": _f32(shape=(2**31, 2**31, 4), offsets=(0, 4))}, b"1234", None,
     ["tensor 'a'", "too large"]),
    ({"a": _f32(shape=5)}, b"1234", None, ["tensor 'a'", "shape 5"]),
    ({"a": _f32(offsets=(0.0, 4.0))}, b"1234", None, ["tensor 'a'", "data_offsets [0.0, 4.0]"]),
    ({"a": _f32(offsets=(-4, 0))}, b"1234", None, ["tensor 'a'", "data_offsets [-4, 0]"]),
    ({"a": _f32(offsets=(0, 4, 8))}, b"1234", None, ["tensor 'a'", "data_offsets"]),
    ({"a": _f32(offsets=(10**30, 10**30 + 4))}, b"1234", None, ["tensor 'a'", "data_offsets"]),
    ({"a": _f32(offsets=(2**40, 2**40 + 4))}, b"1234", None, ["tensor 'a'", "gap"]),
    ({"a": _f32(offsets=(4, 0))}, b"1234", None, ["tensor 'a'", "offsets 4..0"]),
    ({"a": _f32(offsets=(4, 8))}, b"12345678", None, ["tensor 'a'", "gap after byte 0"]),
    ({"a": _f32(), "b": _f32(offsets=(2, 6))}, b"123456", None,
     ["tensor 'b'", "overlaps tensor 'a'"]),
    ({"a": _f32(), "b": _f32()}, b"1234", None, ["overlaps tensor 'a'"]),
    ({"a": _f32()}, b"12345678", None, ["tensor 'a': data ends at byte 4", "8 bytes"]),
    ({"a": _f32(offsets=(0, 4))}, b"12", None, ["tensor 'a': data ends at byte 4", "2 bytes"]),
    ({}, b"1234", None, ["the header's tensors end at byte 0"]),
]


@pytest.mark.parametrize(("header", "data", "length", "fragments"), MALFORMED,
                         ids=[f"{i}-{case[3][-1][:30]}" for i, case in enumerate(MALFORMED)])
def test_malformed_files_are_user_errors_naming_the_file_and_tensor(
    tmp_path: Path, header: object, data: bytes, length: int | None, fragments: list[str]
) -> None:
    path = _write(tmp_path / "bad.safetensors", header, data, length)
    before = path.read_bytes()
    for read in (load_file, read_header, read_metadata):
        with pytest.raises(UserError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a valid safetensors file"), message
        for fragment in fragments:
            assert fragment in message, message
    assert path.read_bytes() == before


def test_header_is_read_without_the_data(tmp_path: Path) -> None:
    tensors = sample()
    save_file(tensors, tmp_path / "x.safetensors")
    header = read_header(tmp_path / "x.safetensors")
    assert {n: (i.dtype, i.shape) for n, i in header.tensors.items()} == {
        n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}
    assert header.data_start + max(i.end for i in header.tensors.values()) == (
        tmp_path / "x.safetensors").stat().st_size


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="shorter"):
        load_file(tmp_path / "short")
    with pytest.raises(UserError, match="missing.safetensors: no such file"):
        load_file(tmp_path / "missing.safetensors")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)

    def blocked(*args: object) -> None:
        raise TimeoutError("the read blocked on the FIFO")

    # Opening a FIFO for reading blocks until a writer comes: never, here.
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        for read in (load_file, read_header):
            with pytest.raises(UserError, match="is a FIFO"):
                read(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_file_checked_is_the_file_read(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A file renamed over the path after its header was checked is not the one loaded."""
    path, other = tmp_path / "x.safetensors", tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(3)}, path)
    save_file({"a": torch.ones(3), "b": torch.ones(2)}, other)
    check = safetensors._read_header

    def check_then_swap(*args: object):
        header = check(*args)
        os.replace(other, path)
        return header

    monkeypatch.setattr(safetensors, "_read_header", check_then_swap)
    back = load_file(path)
    assert set(back) == {"a"} and torch.equal(back["a"], torch.zeros(3))


def test_a_full_disk_leaves_the_old_file(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors as package

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(3)}, path)
    before = path.read_bytes()

    def full_disk(tensors: object, filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise package.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(package.torch, "save_file", full_disk)
    with pytest.raises(OutputError, match=f"{path}: cannot write the output: No space left "
                       "on device .*unchanged"):
        save_file({"a": torch.ones(3)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["x.safetensors"]
