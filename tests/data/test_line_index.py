"""The JSONL line index against a plain-Python reference, and every way input can be bad."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest

from llm_gym.data.line_index import (
    HEADER_SIZE,
    MAGIC,
    CorruptIndexError,
    LineIndex,
    build_line_index,
    default_index_path,
)
from llm_gym.errors import UserError

BOM = b"\xef\xbb\xbf"


def reference(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """Spans of the non-blank lines and the number of blank ones, the obvious slow way."""
    spans, empty, pos = [], 0, 0
    lines = data.split(b"\n")
    if lines[-1] == b"":  # a trailing newline ends the last line; it does not start one
        lines.pop()
    for number, line in enumerate(lines):
        start = pos + (len(BOM) if number == 0 and line.startswith(BOM) else 0)
        end = pos + len(line) - line.endswith(b"\r")
        if data[start:end].strip(b" \t\r"):
            spans.append((start, end))
        else:
            empty += 1
        pos += len(line) + 1
    return spans, empty


def spans_of(index_path: Path, source: Path) -> list[tuple[int, int]]:
    index = LineIndex.open(index_path, source)
    try:
        return [index.span(i) for i in range(len(index))]
    finally:
        index.close()


def check_round_trip(tmp_path: Path, data: bytes, chunk_sizes=(1, 2, 3, 7, 64, 1 << 20)) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(data)
    expected, empty = reference(data)
    for chunk_size in chunk_sizes:
        summary = build_line_index(source, chunk_size=chunk_size)
        assert summary.path == tmp_path / "data.jsonl.idx"
        assert (summary.lines, summary.empty_lines, summary.bytes) == (
            len(expected),
            empty,
            len(data),
        )
        assert spans_of(summary.path, source) == expected, f"chunk_size={chunk_size}"


AWKWARD = {
    "no trailing newline": b'{"a": 1}\n{"a": 2}',
    "crlf": b'{"a": 1}\r\n{"a": 2}\r\n',
    "crlf, no trailing newline, lone cr kept": b'{"a": "x\\r"}\r\n{"a": 2}\r',
    "empty and blank lines": b'\n\n{"a": 1}\n\r\n  \n\t\r\n{"a": 2}\n\n',
    "multi-byte utf-8": '{"t": "héllo €"}\n{"t": "日本語 😀"}\n'.encode(),
    "one line": b'{"a": 1}',
    "one line with newline": b'{"a": 1}\n',
    "leading whitespace is not blank": b' {"a": 1}\n\t{"a": 2}\r\n',
    "byte order mark": BOM + b'{"a": 1}\n{"a": 2}\n',
    "byte order mark then empty line": BOM + b'\n{"a": 2}\n',
    "long line": b'{"a": "' + b"x" * 5000 + b'"}\r\n{"b": 1}\n' + b'{"c": "' + b"y" * 300,
}


@pytest.mark.parametrize("data", AWKWARD.values(), ids=AWKWARD.keys())
def test_matches_reference_on_awkward_files(tmp_path: Path, data: bytes) -> None:
    check_round_trip(tmp_path, data)


def test_matches_reference_on_random_files(tmp_path: Path) -> None:
    rng = random.Random(1234)
    pieces = [b"", b"\r", b"  ", b"\t", b'{"a": 1}', ' {"é": "😀"}'.encode(), b'"x"' * 40]
    for _ in range(25):
        lines = [rng.choice(pieces) + rng.choice([b"", b"\r"]) for _ in range(rng.randint(1, 30))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])
        if reference(data)[0]:  # an all-blank file is an error, tested below
            check_round_trip(tmp_path, data, chunk_sizes=(1, 5, 13, 1 << 20))


def is_json(line: bytes) -> bool:
    try:
        json.loads(line.decode("utf-8"))
    except ValueError:
        return False
    return True


def test_validate_matches_reference_on_random_files(tmp_path: Path) -> None:
    """Validation reassembles lines split across chunks, \r included, before parsing."""
    rng = random.Random(99)
    pieces = [
        b"",
        b" ",
        b'{"a": 1}',
        b'{"a": "\xc3\xa9"}',
        b"[1,",
        b"\xc3",
        b'"' + b"y" * 30 + b'"',
    ]
    source = tmp_path / "data.jsonl"
    for _ in range(25):
        lines = [rng.choice(pieces) + rng.choice([b"", b"\r"]) for _ in range(rng.randint(1, 20))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])
        spans, _ = reference(data)
        expected = [(s, e) for s, e in spans if is_json(data[s:e])]
        if not expected:
            continue
        source.write_bytes(data)
        for chunk_size in (1, 4, 11, 1 << 20):
            summary = build_line_index(
                source, validate=True, on_bad_line="skip", chunk_size=chunk_size
            )
            assert spans_of(summary.path, source) == expected, f"chunk_size={chunk_size}"
            assert summary.bad_count == len(spans) - len(expected)


def test_many_lines_and_spans_slice_the_documents(tmp_path: Path) -> None:
    rng = random.Random(7)
    docs = [{"id": i, "text": "ü" * rng.randint(0, 40)} for i in range(20_000)]
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()
    source = tmp_path / "many.jsonl"
    source.write_bytes(data)
    summary = build_line_index(source, chunk_size=4096)
    spans = spans_of(summary.path, source)
    assert spans == reference(data)[0]
    assert [json.loads(data[s:e]) for s, e in spans] == docs


def test_index_reader(tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"a": 1}\n\n{"a": 2}\r\n')
    index = LineIndex.open(build_line_index(source).path, source)
    assert len(index) == 2
    assert index.span(-1) == index.span(1) == (10, 18)
    assert [index.line_number(i) for i in range(2)] == [1, 3]
    assert index.empty_lines == 1 and not index.validated
    with pytest.raises(IndexError):
        index.span(2)
    assert index.is_stale() is None
    source.write_bytes(b'{"a": 1}\n{"a": 2}\r\n{"a": 3}')  # no empty lines: the quick count
    index = LineIndex.open(build_line_index(source).path, source)
    assert [index.line_number(i) for i in (0, 2, -1)] == [1, 3, 3]


def test_explicit_output_path_and_progress(tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    out = tmp_path / "elsewhere.idx"
    summary = build_line_index(source, out, progress=True)
    assert summary.path == out and not default_index_path(source).exists()
    assert spans_of(out, source) == [(0, 8), (9, 17)]


# -- validation ---------------------------------------------------------------------------

BAD = b'{"a": 1}\n\n{"a": 2,}\n{"a": "\xff"}\n\r\n[1, 2]\n{"a": "\x00"}\n{"a": 3}'


@pytest.mark.parametrize("chunk_size", [3, 1 << 20])
def test_validate_skip_reports_physical_line_numbers(tmp_path: Path, chunk_size: int) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(BAD)
    summary = build_line_index(source, validate=True, on_bad_line="skip", chunk_size=chunk_size)
    assert [b.line for b in summary.bad_lines] == [3, 4, 7]
    assert summary.bad_count == 3 and summary.empty_lines == 2 and summary.lines == 3
    line, reason = summary.bad_lines[1]  # unpacks as the CLI prints it
    assert line == 4 and reason == "invalid UTF-8 at byte offset " + str(BAD.index(b"\xff"))
    reasons = [b.reason for b in summary.bad_lines]
    assert "invalid JSON" in reasons[0] and "UTF-8" in reasons[1] and "control" in reasons[2]
    kept = [json.loads(BAD[s:e]) for s, e in spans_of(summary.path, source)]
    assert kept == [{"a": 1}, [1, 2], {"a": 3}]
    index = LineIndex.open(summary.path, source)
    assert index.validated and index.on_bad_line == "skip" and index.bad_lines == 3
    assert [index.line_number(i) for i in range(3)] == [1, 6, 8]


def test_validate_fail_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(BAD)
    with pytest.raises(UserError, match=r"data\.jsonl line 3: invalid JSON"):
        build_line_index(source, validate=True)
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_validate_accepts_good_file(tmp_path: Path) -> None:
    data = '{"t": "ok"}\n\n{"t": "😀"}\r\n'.encode()
    source = tmp_path / "data.jsonl"
    source.write_bytes(data)
    summary = build_line_index(source, validate=True, chunk_size=2)
    assert summary.bad_lines == [] and spans_of(summary.path, source) == reference(data)[0]


def test_all_lines_bad_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b"nope\n{\n")
    with pytest.raises(UserError, match="no valid lines"):
        build_line_index(source, validate=True, on_bad_line="skip")


# -- bad input never leaves a torn or clobbered index -------------------------------------

GOOD = b'{"a": 1}\n{"a": 2}\n'
BAD_SOURCES = {
    "empty": (b"", "is empty"),
    "only blank lines": (b"\n \r\n\n", "no non-empty lines"),
    "nul bytes": (b'{"a": 1}\n{"a": "\x00"}\n', r"line 2: NUL byte"),
    "binary garbage": (bytes(random.Random(0).randbytes(4096)), "NUL byte|UTF-8"),
    "latin-1 text": ('{"a": 1}\n{"a": "café"}\n'.encode("latin-1"), r"line 2: invalid UTF-8"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(100), "gzip"),
}


@pytest.mark.parametrize("data, message", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_bad_source_raises_and_keeps_existing_index(tmp_path: Path, data: bytes, message: str):
    source = tmp_path / "data.jsonl"
    source.write_bytes(GOOD)
    index_path = build_line_index(source).path
    before = index_path.read_bytes()
    source.write_bytes(data)
    with pytest.raises(UserError, match=rf"data\.jsonl.*({message})"):
        build_line_index(source, chunk_size=5)
    assert index_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["data.jsonl", "data.jsonl.idx"]


@pytest.mark.parametrize("chunk_size", [4, 1 << 20])
def test_nul_byte_names_its_line(tmp_path: Path, chunk_size: int) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": "\x00"}\n{"a": 3}\n')
    with pytest.raises(UserError, match=r"data\.jsonl line 4: NUL byte at byte offset 26"):
        build_line_index(source, chunk_size=chunk_size)


def test_missing_source_and_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nothere\.jsonl: no such file"):
        build_line_index(tmp_path / "nothere.jsonl")
    with pytest.raises(UserError, match=r"subdir: is a directory, not a regular file"):
        (tmp_path / "subdir").mkdir()
        build_line_index(tmp_path / "subdir")
    source = tmp_path / "data.jsonl"
    source.write_bytes(GOOD)
    with pytest.raises(UserError, match=r"no-dir.*cannot write"):
        build_line_index(source, tmp_path / "no-dir" / "data.idx")


def test_error_mid_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(GOOD * 100)
    index_path = build_line_index(source).path
    before = index_path.read_bytes()

    def explode(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", explode)
    # A full disk is the user's to fix: reported with the path, no traceback.
    with pytest.raises(UserError, match="data.jsonl.idx: cannot write.*No space"):
        build_line_index(source, chunk_size=16)
    assert index_path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["data.jsonl", "data.jsonl.idx"]


# -- reading a bad index --------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "data.jsonl"
    source.write_bytes(GOOD)
    return build_line_index(source).path, source


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"x\.jsonl\.idx: no such index"):
        LineIndex.open(tmp_path / "x.jsonl.idx", tmp_path / "x.jsonl")


@pytest.mark.parametrize("keep", [0, 4, HEADER_SIZE - 1, HEADER_SIZE + 20])
def test_truncated_index(built: tuple[Path, Path], keep: int) -> None:
    index_path, source = built
    index_path.write_bytes(index_path.read_bytes()[:keep])
    with pytest.raises(CorruptIndexError, match=r"data\.jsonl\.idx: (index )?truncated"):
        LineIndex.open(index_path, source)


def test_trailing_bytes_wrong_magic_and_version(built: tuple[Path, Path]) -> None:
    index_path, source = built
    good = index_path.read_bytes()
    index_path.write_bytes(good + b"\0")
    with pytest.raises(CorruptIndexError, match="trailing bytes"):
        LineIndex.open(index_path, source)
    index_path.write_bytes(b"NOTANIDX" + good[8:])
    with pytest.raises(UserError, match=r"data\.jsonl\.idx: not an llm_gym line index"):
        LineIndex.open(index_path, source)
    index_path.write_bytes(MAGIC + struct.pack("<I", 99) + good[12:])
    with pytest.raises(CorruptIndexError, match=r"data\.jsonl\.idx: unsupported .* version 99"):
        LineIndex.open(index_path, source)


# -- staleness -------------------------------------------------------------------------------


def test_stale_when_size_changes(built: tuple[Path, Path]) -> None:
    index_path, source = built
    index = LineIndex.open(index_path, source)
    with source.open("ab") as f:
        f.write(b'{"a": 3}\n')
    assert "changed size" in index.is_stale()
    source.unlink()
    assert "no longer exists" in index.is_stale()


def test_stale_when_same_size_content_changes(built: tuple[Path, Path]) -> None:
    index_path, source = built
    index = LineIndex.open(index_path, source)
    st = source.stat()
    source.write_bytes(GOOD.replace(b"2", b"9"))
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the content can tell
    assert source.stat().st_size == st.st_size
    assert "differ from when indexed" in index.is_stale()


def test_stale_when_only_mtime_changes(built: tuple[Path, Path]) -> None:
    index_path, source = built
    index = LineIndex.open(index_path, source)
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "modified after indexing" in index.is_stale()
    assert index.is_stale(source) == index.is_stale()


def test_a_100_mb_line_is_indexed_and_validated_in_bounded_chunks(tmp_path: Path) -> None:
    source = tmp_path / "huge.jsonl"
    big = b'{"text": "' + b"x" * (100 << 20) + b'"}'
    source.write_bytes(b'{"text": "a"}\n' + big + b'\n{"text": "b"}\n')
    for validate in (False, True):
        summary = build_line_index(source, validate=validate)
        assert summary.lines == 3
        index = LineIndex.open(summary.path, source)
        start, end = index.span(1)
        assert (start, end - start) == (14, len(big))
        index.close()
