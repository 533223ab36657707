"""The packed token format: writer/reader round trips, layout, atomicity, every bad file."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from llm_gym.data.packed import (
    HEADER_SIZE,
    MAGIC_BIN,
    MAGIC_IDX,
    PackedTokens,
    PackedWriter,
    pack_paths,
    token_dtype,
)
from llm_gym.errors import UserError

FP = "f" * 64


def random_docs(rng: np.random.Generator, vocab: int, n: int) -> list[np.ndarray]:
    return [rng.integers(0, vocab, size=int(rng.integers(0, 40))) for _ in range(n)]


def write(prefix: Path, docs: list[np.ndarray], vocab: int = 1000, fp: str = FP) -> None:
    with PackedWriter(prefix, vocab_size=vocab, eod_id=vocab - 1, fingerprint=fp) as w:
        # Mixed granularity: single documents and batches must give the same layout.
        w.add_document(docs[0])
        if len(docs) > 1:
            w.add_documents(np.concatenate(docs[1:]), np.array([len(d) for d in docs[1:]]))


def only_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("vocab,dtype", [(257, "<u2"), (65536, "<u2"), (65537, "<u4")])
def test_round_trip_and_dtype_choice(tmp_path: Path, vocab: int, dtype: str) -> None:
    rng = np.random.default_rng(0)
    docs = random_docs(rng, vocab, 50)
    docs[3] = np.array([vocab - 1, 0], dtype=np.int64)  # extremes of the id range
    write(tmp_path / "p", docs, vocab)
    p = PackedTokens.open(tmp_path / "p")
    assert token_dtype(vocab) == np.dtype(dtype) == p.tokens.dtype
    assert (p.vocab_size, p.eod_id, p.fingerprint) == (vocab, vocab - 1, FP)
    assert len(p) == p.n_docs == 50 and p.n_tokens == sum(map(len, docs))
    for i, d in enumerate(docs):
        assert p.document(i).tolist() == d.tolist()
    assert p.document(-1).tolist() == docs[-1].tolist()
    p.verify()
    bin_path, idx_path = pack_paths(tmp_path / "p")
    itemsize = np.dtype(dtype).itemsize
    assert bin_path.stat().st_size == HEADER_SIZE + p.n_tokens * itemsize
    assert idx_path.stat().st_size == HEADER_SIZE + (p.n_docs + 1) * 8
    raw = bin_path.read_bytes()
    assert raw[:8] == MAGIC_BIN and idx_path.read_bytes()[:8] == MAGIC_IDX
    assert struct.unpack_from("<IIQQQQ", raw, 8) == (1, itemsize, vocab, vocab - 1, p.n_tokens, 50)
    assert raw[48:112].rstrip(b"\0") == FP.encode()
    first = np.frombuffer(raw, dtype=dtype, count=len(docs[0]), offset=HEADER_SIZE)
    assert first.tolist() == docs[0].tolist()  # little-endian tokens right after the header


def test_same_content_gives_identical_bytes(tmp_path: Path) -> None:
    docs = random_docs(np.random.default_rng(1), 300, 20)
    write(tmp_path / "a", docs)
    with PackedWriter(tmp_path / "b", vocab_size=1000, eod_id=999, fingerprint=FP) as w:
        for d in docs:
            w.add_document(d)
    for a, b in zip(pack_paths(tmp_path / "a"), pack_paths(tmp_path / "b"), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_empty_pack_opens(tmp_path: Path) -> None:
    PackedWriter(tmp_path / "e", vocab_size=10, eod_id=9, fingerprint=FP).finish()
    p = PackedTokens.open(tmp_path / "e")
    assert (len(p), p.n_tokens, p.offsets.tolist()) == (0, 0, [0])
    with pytest.raises(IndexError):
        p.document(0)


def test_failed_write_leaves_previous_pack_and_no_temp_files(tmp_path: Path) -> None:
    write(tmp_path / "p", [np.array([1, 2, 3])])
    before = [f.read_bytes() for f in pack_paths(tmp_path / "p")]
    with pytest.raises(RuntimeError, match="boom"):
        with PackedWriter(tmp_path / "p", vocab_size=1000, eod_id=999, fingerprint=FP) as w:
            w.add_document([5, 6, 7, 8])
            raise RuntimeError("boom")
    with PackedWriter(tmp_path / "p", vocab_size=1000, eod_id=999, fingerprint=FP) as w:
        with pytest.raises(ValueError, match="token id 1000 outside the vocabulary"):
            w.add_document([1, 1000])
        w.abort()
    assert [f.read_bytes() for f in pack_paths(tmp_path / "p")] == before
    assert only_files(tmp_path) == ["p.bin", "p.idx"]


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="eod_id"):
        PackedWriter(tmp_path / "x", vocab_size=10, eod_id=10, fingerprint=FP)
    with pytest.raises(ValueError, match="longer than 64"):
        PackedWriter(tmp_path / "x", vocab_size=10, eod_id=1, fingerprint="a" * 65)
    with PackedWriter(tmp_path / "x", vocab_size=10, eod_id=1, fingerprint=FP) as w:
        with pytest.raises(ValueError, match="token id -1"):
            w.add_document([-1])
        with pytest.raises(ValueError, match="do not add up"):
            w.add_documents(np.array([1, 2]), np.array([1]))
    assert PackedTokens.open(tmp_path / "x").n_tokens == 0


# --- bad files: each a UserError naming the file and what is wrong ------------------------


@pytest.fixture
def pack(tmp_path: Path) -> tuple[Path, Path, Path]:
    write(tmp_path / "p", random_docs(np.random.default_rng(2), 1000, 30))
    return (tmp_path / "p", *pack_paths(tmp_path / "p"))


def expect_error(prefix: Path, path: Path, *phrases: str) -> None:
    with pytest.raises(UserError) as info:
        PackedTokens.open(prefix)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize("which", [0, 1])
def test_truncated_payload(pack, which: int) -> None:
    prefix, *paths = pack
    path = paths[which]
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    what = "tokens" if which == 0 else "document offsets"
    expect_error(prefix, path, "truncated", what, f"the file has {len(data) - 3} bytes")


@pytest.mark.parametrize("which", [0, 1])
def test_truncated_header_and_trailing_bytes(pack, which: int) -> None:
    prefix, *paths = pack
    path = paths[which]
    data = path.read_bytes()
    path.write_bytes(data + b"\0\0")
    expect_error(prefix, path, "2 unexpected bytes")
    path.write_bytes(data[:100])
    expect_error(prefix, path, "truncated header", "needs 128 bytes", "has 100")
    path.write_bytes(b"")
    expect_error(prefix, path, "truncated header")


def test_wrong_magic_version_and_header_fields(pack) -> None:
    prefix, bin_path, idx_path = pack
    good = bin_path.read_bytes()

    def patch(offset: int, fmt: str, value) -> None:
        data = bytearray(good)
        struct.pack_into(fmt, data, offset, value)
        bin_path.write_bytes(bytes(data))

    patch(0, "8s", b"NOTOURS!")
    expect_error(prefix, bin_path, "not an llm_gym packed file", "magic")
    patch(0, "8s", MAGIC_IDX)
    expect_error(prefix, bin_path, "that is a .idx header")
    patch(8, "<I", 2)
    expect_error(prefix, bin_path, "format version 2", "reads version 1")
    patch(12, "<I", 4)
    expect_error(prefix, bin_path, "itemsize 4")
    patch(24, "<Q", 1000)
    expect_error(prefix, bin_path, "eod_id 1000")
    patch(112, "16s", b"x" * 16)  # digest of another pack
    expect_error(prefix, idx_path, "does not belong to", "digest")


def test_idx_from_another_pack(pack, tmp_path: Path) -> None:
    prefix, bin_path, idx_path = pack
    docs = [PackedTokens.open(prefix).document(i).copy() for i in range(30)]
    docs[0], docs[1] = docs[1], docs[0]  # same counts, other boundaries
    write(tmp_path / "other", docs)
    idx_path.write_bytes(pack_paths(tmp_path / "other")[1].read_bytes())
    expect_error(prefix, idx_path, "does not belong to", "digest")


def test_missing_files(pack) -> None:
    prefix, bin_path, idx_path = pack
    idx_path.unlink()
    expect_error(prefix, idx_path, "not found")
    bin_path.unlink()
    expect_error(prefix, bin_path, "not found")


def test_verify_catches_flipped_token_and_bad_offsets(pack) -> None:
    prefix, bin_path, idx_path = pack
    data = bytearray(bin_path.read_bytes())
    data[HEADER_SIZE + 5] ^= 1
    bin_path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=re.escape(f"{bin_path}: content does not match")):
        PackedTokens.open(prefix).verify()
    data = bytearray(idx_path.read_bytes())
    struct.pack_into("<Q", data, HEADER_SIZE + 8 * 3, 10**6)
    idx_path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=re.escape(f"{idx_path}: offsets decrease")):
        PackedTokens.open(prefix).verify()


def test_check_tokenizer(pack) -> None:
    prefix, bin_path, _ = pack
    p = PackedTokens.open(prefix)
    p.check_tokenizer(FP)
    with pytest.raises(UserError) as info:
        p.check_tokenizer("0" * 64)
    assert str(info.value).startswith(f"{bin_path}: packed with tokenizer fingerprint ffff")
    assert "Re-pack" in str(info.value)


def test_pickles_as_a_reopen(pack) -> None:
    prefix, _, _ = pack
    p = PackedTokens.open(prefix)
    blob = pickle.dumps(p)
    assert len(blob) < 1024  # the mapped tokens are not copied
    clone = pickle.loads(blob)
    assert clone.header == p.header and np.array_equal(clone.tokens, p.tokens)
