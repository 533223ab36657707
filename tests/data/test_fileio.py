"""fileio and file_kinds, as every writer and reader meets them: targets that are not
regular files, failed writes, inputs that would block, files told apart by their bytes."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from llm_gym.data.file_kinds import (
    JSONL,
    LINE_INDEX,
    PACKED_BIN,
    PACKED_IDX,
    TOKENIZER_JSON,
    check_outputs,
    sniff_kind,
)
from llm_gym.data.line_index import build_line_index
from llm_gym.data.packed import PackedWriter
from llm_gym.errors import UserError
from llm_gym.fileio import OutputError, atomic_output, open_input, read_json_object


def _names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "out.txt"
    path.write_text("old content\n")
    return path


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (opening a FIFO) fails after 20 s instead of hanging the suite."""

    def fail(signum, frame):  # noqa: ANN001
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def _socket(tmp_path: Path) -> Path:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
    return tmp_path / "sock"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "dir").mkdir()
    return tmp_path / "dir"


@pytest.mark.parametrize(
    ("make", "what"),
    [(_fifo, r"is a FIFO \(named pipe\)"), (_socket, "is a socket"),
     (_directory, "is a directory")],
)
def test_a_target_that_is_not_a_regular_file_is_refused(tmp_path: Path, make, what) -> None:
    target = make(tmp_path)
    kind = os.lstat(target).st_mode
    with pytest.raises(OutputError, match=f"{target}: {what}, not a regular file"):
        with atomic_output(target, "w") as f:
            f.write("new")
    assert os.lstat(target).st_mode == kind and _names(tmp_path) == [target.name]


def test_a_symlink_target_is_refused_not_replaced_or_followed(tmp_path: Path, old: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(old.name)
    with pytest.raises(OutputError, match=r"link\.txt: is a symbolic link \(to out\.txt\)"):
        with atomic_output(link, "w") as f:
            f.write("new")
    assert link.is_symlink() and old.read_text() == "old content\n"
    assert _names(tmp_path) == ["link.txt", "out.txt"]


def test_a_full_disk_while_writing_names_the_output(tmp_path: Path, old: Path) -> None:
    with pytest.raises(OutputError, match=f"{old}: cannot write the output: No space left"):
        with atomic_output(old, "w") as f:
            f.write("partial")
            raise OSError(errno.ENOSPC, "No space left on device")  # what f.write raises
    assert old.read_text() == "old content\n" and _names(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_failed_sync_or_rename_names_the_output(
    tmp_path: Path, old: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    def fail(*args):
        raise OSError(errno.EDQUOT if call == "fsync" else errno.EROFS, "refused")

    monkeypatch.setattr(os, call, fail)
    with pytest.raises(OutputError, match=f"{old}: cannot write the output: refused"):
        with atomic_output(old, "w") as f:
            f.write("new")
    monkeypatch.undo()
    assert old.read_text() == "old content\n" and _names(tmp_path) == ["out.txt"]


def test_a_missing_or_file_parent_is_named(tmp_path: Path, old: Path) -> None:
    with pytest.raises(OutputError, match=r"the directory .*nodir does not exist"):
        with atomic_output(tmp_path / "nodir" / "x", "w"):
            pass
    with pytest.raises(OutputError, match=r"out\.txt is not a directory"):
        with atomic_output(old / "x", "w"):
            pass
    assert _names(tmp_path) == ["out.txt"]


def test_other_errors_in_the_block_stay_what_they_are(tmp_path: Path, old: Path) -> None:
    # An input missing halfway through is not the output's fault: no OutputError.
    with pytest.raises(FileNotFoundError):
        with atomic_output(old, "w") as f:
            f.write("new")
            open(tmp_path / "missing-input")  # noqa: SIM115
    assert old.read_text() == "old content\n" and _names(tmp_path) == ["out.txt"]


def test_a_pack_is_refused_over_a_fifo_before_anything_is_written(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.idx")
    with pytest.raises(OutputError, match=r"p\.idx: is a FIFO"):
        PackedWriter(tmp_path / "p", vocab_size=10, eod_id=0, fingerprint="x")
    assert _names(tmp_path) == ["p.idx"]


@pytest.mark.parametrize(
    ("make", "what"),
    [(_fifo, r"is a FIFO \(named pipe\)"), (_socket, "is a socket"),
     (_directory, "is a directory"),
     (lambda _: Path("/dev/null"), "is a character device")],
)
def test_inputs_must_be_regular_files(tmp_path: Path, make, what) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError, match=f"{path}: {what}, not a regular file; the corpus"):
        open_input(path, "the corpus")
    with pytest.raises(UserError, match=f"{path}: {what}"):
        read_json_object(path, what="a config")


def test_input_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope: no such file \(the corpus\)"):
        open_input(tmp_path / "nope", "the corpus")


# -- what a file is ---------------------------------------------------------------------------


def test_files_are_told_apart_by_their_bytes(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a \\"added_tokens\\": \\"normalizer\\": b"}\n{"text": "c"}\n')
    build_line_index(jsonl)
    with PackedWriter(tmp_path / "p", vocab_size=10, eod_id=0, fingerprint="x") as w:
        w.add_document([1, 0])
    spec = {"version": "1.0", "truncation": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "model": {"type": "BPE"}}
    (tmp_path / "pretty.json").write_text(json.dumps(spec, indent=2))
    (tmp_path / "compact.json").write_text(json.dumps(spec))
    (tmp_path / "notes.txt").write_text("just notes\n")
    (tmp_path / "empty").write_bytes(b"")
    assert {p.name: sniff_kind(p) for p in sorted(tmp_path.iterdir())} == {
        "compact.json": TOKENIZER_JSON,
        "d.jsonl": JSONL,
        "d.jsonl.idx": LINE_INDEX,
        "empty": None,
        "notes.txt": None,
        "p.bin": PACKED_BIN,
        "p.idx": PACKED_IDX,
        "pretty.json": TOKENIZER_JSON,
    }
    assert sniff_kind(_fifo(tmp_path)) is None  # and it does not block


def test_check_outputs(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"text": "a"}\n')
    (tmp_path / "sub").mkdir()
    check_outputs({tmp_path / "new.idx": LINE_INDEX}, [src])  # absent: fine
    with pytest.raises(UserError, match=r"output .*sub/\.\./d\.jsonl is the input .*d\.jsonl"):
        check_outputs({tmp_path / "sub" / ".." / "d.jsonl": LINE_INDEX}, [src])
    with pytest.raises(UserError, match=r"exists and is JSONL data, not an llm_gym line index"):
        check_outputs({src: LINE_INDEX}, [])
    check_outputs({src: JSONL}, [])  # the same kind again: a rebuild


def test_json_nested_too_deeply_is_named(tmp_path):
    from llm_gym.fileio import read_json_object

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)  # json.loads raises RecursionError, not JSONDecodeError
    with pytest.raises(UserError, match="deep.json: JSON nested too deeply"):
        read_json_object(path, what="a test")
