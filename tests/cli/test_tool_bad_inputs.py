"""Bad inputs to `llm_gym tools ...`, one table: each is refused with exit code 2 and a
message naming what is wrong, no traceback, and the working directory exactly as it was
(inputs byte-identical, no output, no temporary file)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.data.line_index import build_line_index
from llm_gym.data.pack import pack_jsonl
from llm_gym.data.tokenizer_training import train_bpe_tokenizer
from llm_gym_components.tokenizers import ByteLevelTokenizer

TEXTS = [f"document {i}: the quick brown fox jumps over the lazy dog" for i in range(40)]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file a case may need, made once: data, its index, a tokenizer, a pack."""
    d = tmp_path_factory.mktemp("tool-inputs")
    good = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS)
    (d / "d.jsonl").write_text(good)
    build_line_index(d / "d.jsonl")
    train_bpe_tokenizer(d / "d.jsonl", 300, d / "tok.json")
    pack_jsonl(d / "d.jsonl", ByteLevelTokenizer(), d / "p")
    (d / "x.bin").write_text(good)  # JSONL whose name a pack prefix "x" would write
    (d / "s.jsonl").write_text(good + '{"text": "lone \\ud800 surrogate"}\n')
    (d / "bad.jsonl").write_text(good + "not json\n")
    (d / "afile").write_text("a plain file\n")
    (d / "dir").mkdir()
    (d / "elsewhere").mkdir()
    return d


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda d: os.mkfifo(d / name)


def _symlink(name: str, target: str) -> Callable[[Path], None]:
    return lambda d: os.symlink(target, d / name)


def _hardlink(name: str, target: str) -> Callable[[Path], None]:
    return lambda d: os.link(d / target, d / name)


def _char_device(name: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        try:  # the null device's numbers, 1:3
            os.mknod(d / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating a device node needs root (CAP_MKNOD); out-socket covers it")
    return make


def _socket(name: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(d / name))
    return make


TRAIN = ["tools", "tokenizer", "train"]
PACK_BYTES = ["tools", "pack", "--tokenizer", "ByteLevel"]

# (id, argv, fragments expected in the message, extra setup)
CASES: list[tuple[str, list[str], list[str], Callable[[Path], None] | None]] = [
    # outputs that would destroy an input or another tool's file
    ("index-out-is-input", ["tools", "index", "d.jsonl", "--out", "d.jsonl"],
     ["output d.jsonl is the input d.jsonl"], None),
    ("index-out-hardlink-of-input", ["tools", "index", "d.jsonl", "--out", "h.jsonl"],
     ["output h.jsonl is the input d.jsonl", "same file"], _hardlink("h.jsonl", "d.jsonl")),
    ("index-out-is-tokenizer", ["tools", "index", "d.jsonl", "--out", "tok.json"],
     ["tok.json", "is a tokenizer JSON, not an llm_gym line index"], None),
    ("index-out-is-packed-idx", ["tools", "index", "d.jsonl", "--out", "p.idx"],
     ["p.idx", "packed document index"], None),
    ("pack-prefix-idx-is-line-index", [*PACK_BYTES, "d.jsonl", "--out", "d.jsonl"],
     ["d.jsonl.idx", "is an llm_gym line index, not an llm_gym packed document index"], None),
    ("pack-bin-is-input", [*PACK_BYTES, "x.bin", "--out", "x"],
     ["output x.bin is the input x.bin"], None),
    ("pack-over-its-tokenizer", ["tools", "pack", "d.jsonl", "--tokenizer", "tok.json",
                                 "--out", "t"],
     ["output t.bin is the input tok.json"], _symlink("t.bin", "tok.json")),
    ("train-out-is-input", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "d.jsonl"],
     ["output d.jsonl is the input d.jsonl"], None),
    ("train-out-is-line-index", [*TRAIN, "d.jsonl", "--vocab-size", "300",
                                 "--out", "d.jsonl.idx"],
     ["d.jsonl.idx", "is an llm_gym line index, not a tokenizer JSON"], None),
    ("train-out-is-pack", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "p.bin"],
     ["p.bin", "packed token file"], None),
    ("train-out-is-other-jsonl", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "s.jsonl"],
     ["s.jsonl", "is JSONL data, not a tokenizer JSON"], None),
    ("demo-corpus-exists", ["tools", "demo-corpus", "d.jsonl", "--target-mb", "0.01"],
     ["d.jsonl", "already exists", "--force"], None),
    ("demo-corpus-force-over-index", ["tools", "demo-corpus", "d.jsonl.idx", "--force",
                                      "--target-mb", "0.01"],
     ["d.jsonl.idx", "is an llm_gym line index, not JSONL data"], None),
    # outputs that are not regular files
    # A device node of our own, not /dev/null: a broken build, run as root, would replace it.
    ("out-char-device", ["tools", "index", "d.jsonl", "--out", "null"],
     ["null", "is a character device, not a regular file"], _char_device("null")),
    ("out-socket", [*PACK_BYTES, "d.jsonl", "--out", "s"],
     ["s.bin", "is a socket, not a regular file"], _socket("s.bin")),
    ("out-fifo", ["tools", "index", "d.jsonl", "--out", "f.idx"],
     ["f.idx", "is a FIFO"], _fifo("f.idx")),
    ("out-directory", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "dir"],
     ["dir", "is a directory, not a regular file"], None),
    ("out-symlink", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "l.json"],
     ["l.json", "is a symbolic link (to elsewhere/t.json)"], _symlink("l.json",
                                                                      "elsewhere/t.json")),
    ("pack-out-symlink", [*PACK_BYTES, "d.jsonl", "--out", "q"],
     ["q.idx", "is a symbolic link"], _symlink("q.idx", "elsewhere/q.idx")),
    # unwritable outputs (a path under a file: even root cannot create it)
    ("index-out-under-file", ["tools", "index", "d.jsonl", "--out", "afile/x.idx"],
     ["afile/x.idx", "cannot write", "afile is not a directory"], None),
    ("pack-out-under-file", [*PACK_BYTES, "d.jsonl", "--out", "afile/sub/p"],
     ["afile/sub/p.bin", "cannot write", "afile is not a directory"], None),
    ("train-out-under-file", [*TRAIN, "d.jsonl", "--vocab-size", "300", "--out", "afile/t.json"],
     ["afile/t.json", "cannot write", "afile is not a directory"], None),
    ("demo-corpus-under-file", ["tools", "demo-corpus", "afile/c.jsonl", "--target-mb", "0.01"],
     ["afile/c.jsonl", "cannot write", "afile is not a directory"], None),
    ("index-out-missing-dir", ["tools", "index", "d.jsonl", "--out", "nodir/x.idx"],
     ["nodir/x.idx", "the directory nodir does not exist"], None),
    # inputs that are not regular files (a FIFO would block forever)
    ("index-in-fifo", ["tools", "index", "f.jsonl"], ["f.jsonl", "is a FIFO"],
     _fifo("f.jsonl")),
    ("index-validate-in-fifo", ["tools", "index", "f.jsonl", "--validate"],
     ["f.jsonl", "is a FIFO"], _fifo("f.jsonl")),
    ("pack-in-fifo", [*PACK_BYTES, "f.jsonl", "--out", "o"], ["f.jsonl", "is a FIFO"],
     _fifo("f.jsonl")),
    ("train-in-fifo", [*TRAIN, "f.jsonl", "--vocab-size", "300", "--out", "o.json"],
     ["f.jsonl", "is a FIFO"], _fifo("f.jsonl")),
    ("pack-tokenizer-fifo", ["tools", "pack", "d.jsonl", "--tokenizer", "f.json", "--out", "o"],
     ["f.json", "is a FIFO"], _fifo("f.json")),
    ("index-in-directory", ["tools", "index", "dir"], ["dir", "is a directory"], None),
    ("pack-in-directory", [*PACK_BYTES, "dir", "--out", "o"], ["dir", "is a directory"], None),
    ("train-in-directory", [*TRAIN, "dir", "--vocab-size", "300", "--out", "o.json"],
     ["dir", "is a directory"], None),
    ("pack-in-device", [*PACK_BYTES, "/dev/null", "--out", "o"],
     ["/dev/null", "is a character device"], None),
    # bad lines: named at file:line, with the flag that skips them
    ("pack-lone-surrogate", [*PACK_BYTES, "s.jsonl", "--out", "o"],
     ["s.jsonl:41", "unpaired surrogate U+D800", "--on-bad-line skip"], None),
    ("train-lone-surrogate", [*TRAIN, "s.jsonl", "--vocab-size", "300", "--out", "o.json"],
     ["s.jsonl:41", "unpaired surrogate U+D800", "--on-bad-line skip"], None),
    ("index-validate-lone-surrogate", ["tools", "index", "s.jsonl", "--validate"],
     ["s.jsonl line 41", "unpaired surrogate", "--on-bad-line skip"], None),
    ("pack-bad-json", [*PACK_BYTES, "bad.jsonl", "--out", "o", "--workers", "2"],
     ["bad.jsonl:41", "invalid JSON", "--on-bad-line skip"], None),
    ("train-bad-json", [*TRAIN, "bad.jsonl", "--vocab-size", "300", "--out", "o.json"],
     ["bad.jsonl:41", "invalid JSON", "--on-bad-line skip"], None),
    # tokenizer options
    ("tokenizer-option-unknown-key", ["tools", "pack", "d.jsonl", "--tokenizer", "DemoBPE",
                                      "--tokenizer-option", "vocab_siz=512", "--out", "o"],
     ["--tokenizer-option", "no option 'vocab_siz'", "did you mean 'vocab_size'",
      "vocab_size (int)", "corpus_mb (float)"], None),
    ("tokenizer-option-bad-type", ["tools", "pack", "d.jsonl", "--tokenizer", "DemoBPE",
                                   "--tokenizer-option", "vocab_size=big", "--out", "o"],
     ["--tokenizer-option vocab_size=big", "expects int"], None),
    ("tokenizer-option-out-of-range", ["tools", "pack", "d.jsonl", "--tokenizer", "DemoBPE",
                                       "--tokenizer-option", "vocab_size=3", "--out", "o"],
     ["--tokenizer-option vocab_size=3", ">= 512"], None),
    ("tokenizer-option-no-options", [*PACK_BYTES, "d.jsonl", "--tokenizer-option", "a=1",
                                     "--out", "o"],
     ["--tokenizer-option 'a=1'", "ByteLevel has no option 'a'", "its options: none"], None),
    ("tokenizer-option-path-of-json", ["tools", "pack", "d.jsonl", "--tokenizer", "tok.json",
                                       "--tokenizer-option", "path=x.json", "--out", "o"],
     ["--tokenizer-option 'path=x.json'", "set by --tokenizer tok.json", "eod_token (str)"],
     None),
]


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: content for files, target for links, type otherwise."""
    seen: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            seen[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            seen[str(path.relative_to(root))] = path.read_bytes()
        else:
            seen[str(path.relative_to(root))] = stat.S_IFMT(st.st_mode)
    return seen


def _timeout(signum, frame):  # noqa: ANN001
    raise TimeoutError("the command blocked (a FIFO opened for reading?)")


@pytest.mark.parametrize(("argv", "fragments", "setup"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_refused_and_nothing_changes(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
    argv: list[str], fragments: list[str], setup: Callable[[Path], None] | None,
) -> None:
    work = tmp_path / "work"
    shutil.copytree(template, work, symlinks=True)
    if setup is not None:
        setup(work)
    monkeypatch.chdir(work)
    before = _snapshot(work)
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(60)  # a blocked open() is interrupted, and fails the test instead of hanging
    try:
        with pytest.raises(SystemExit) as exited:
            main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    message = captured.out + captured.err
    assert exited.value.code == 2, message
    assert "Traceback" not in message
    flat = " ".join(message.split())  # rich wraps long lines
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {message!r}"
    assert "on_bad_line=" not in flat  # the CLI names its flag, not the Python argument
    assert _snapshot(work) == before


# -- a full disk: the file-size limit makes writes fail with EFBIG, as ENOSPC would ------------

_FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, resource, signal, sys
    from llm_gym.cli.main import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    codes = []
    for argv in json.loads(sys.argv[2]):
        try:
            main(argv)
        except SystemExit as e:
            codes.append(e.code)
    print("CODES", json.dumps(codes))
""")


def test_a_full_disk_is_named_and_keeps_the_old_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    corpus = work / "big.jsonl"
    corpus.write_text("".join(json.dumps({"text": t * 20}) + "\n" for t in TEXTS))  # 90 kB
    # Old outputs that must survive: small ones, written before the limit.
    pack_jsonl(work / "big.jsonl", ByteLevelTokenizer(), work / "p", batch_docs=1)
    small = work / "small.jsonl"
    small.write_text(json.dumps({"text": "old"}) + "\n")
    train_bpe_tokenizer(small, 257, work / "tok.json")
    (work / "corpus.jsonl").write_text('{"text": "old corpus"}\n')
    before = _snapshot(work)
    limit = 8 << 10  # every output below is larger than this; every input is only read
    commands = [
        ["tools", "pack", "big.jsonl", "--tokenizer", "ByteLevel", "--out", "p"],
        ["tools", "tokenizer", "train", "big.jsonl", "--vocab-size", "400", "--out", "tok.json"],
        ["tools", "demo-corpus", "corpus.jsonl", "--force", "--target-mb", "0.05"],
        ["tools", "index", "big.jsonl", "--out", "big.idx"],
    ]
    # preexec_fn is not used: the limit would then also bind python's own startup.
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(limit), json.dumps(commands)],
        capture_output=True, text=True, cwd=work, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert "CODES [2, 2, 2, 0]" in output, output
    assert "Traceback" not in output
    for name in ("p.bin", "tok.json", "corpus.jsonl"):
        assert f"{name}: cannot write the output: File too large" in output, output
    after = _snapshot(work)
    assert after.pop("big.idx")  # the index of 40 lines fits below the limit: written
    assert after == before
