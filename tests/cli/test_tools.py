"""`llm_gym tools ...` as a user runs them: JSONL -> index, tokenizer, packed tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.data.packed import PackedTokens


def _cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "hello world"}\n\n{"text": "caf\xc3\xa9"}\r\nnot json\n'
                     b'{"text": "last, no newline"}')
    return path


def test_index_and_the_original_alias(capsys, jsonl):
    code, out = _cli(capsys, "tools", "index", jsonl)
    assert code == 0 and "indexed 4 lines" in out and "1 empty skipped" in out
    index = jsonl.with_name("d.jsonl.idx")
    first = index.read_bytes()
    code, out = _cli(capsys, "create_mmap_index", jsonl)
    assert code == 0 and index.read_bytes() == first


def test_index_validate_names_the_line_and_keeps_the_old_index(capsys, jsonl):
    assert _cli(capsys, "tools", "index", jsonl)[0] == 0
    index = jsonl.with_name("d.jsonl.idx")
    before = index.read_bytes()
    code, out = _cli(capsys, "tools", "index", jsonl, "--validate")
    assert code == 2 and "d.jsonl" in out and "line 4" in out and "Traceback" not in out
    assert index.read_bytes() == before
    code, out = _cli(capsys, "tools", "index", jsonl, "--validate", "--on-bad-line", "skip")
    assert code == 0 and "skipped" in out and "d.jsonl:4" in out and "indexed 3 lines" in out


def test_corpus_tokenizer_and_pack_from_the_command_line(capsys, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    code, out = _cli(capsys, "tools", "demo-corpus", corpus, "--target-mb", "0.1")
    assert code == 0 and corpus.stat().st_size > 90_000
    tokenizer = tmp_path / "tok.json"
    assert _cli(capsys, "tools", "tokenizer", "train", corpus, "--vocab-size", 500,
                "--out", tokenizer)[0] == 0
    code, out = _cli(capsys, "tools", "pack", corpus, "--tokenizer", tokenizer,
                     "--out", tmp_path / "packed" / "c", "--workers", 2)
    assert code == 0, out
    packed = PackedTokens.open(tmp_path / "packed" / "c")
    assert packed.vocab_size == 500 and packed.n_docs > 10

    code, out = _cli(capsys, "tools", "pack", corpus, "--tokenizer", "ByteLevel",
                     "--out", tmp_path / "packed" / "b")
    assert code == 0 and PackedTokens.open(tmp_path / "packed" / "b").vocab_size == 257


def test_pack_errors_name_the_file_line_or_tokenizer(capsys, jsonl, tmp_path):
    code, out = _cli(capsys, "tools", "pack", jsonl, "--tokenizer", "ByteLevel",
                     "--out", tmp_path / "x")
    assert code == 2 and "d.jsonl:4" in out
    assert not (tmp_path / "x.bin").exists()
    code, out = _cli(capsys, "tools", "pack", jsonl, "--tokenizer", "Bytelevl",
                     "--out", tmp_path / "x")
    assert code == 2 and "did you mean 'ByteLevel'" in out


def test_pack_and_train_skip_bad_lines_when_asked(capsys, jsonl, tmp_path):
    code, out = _cli(capsys, "tools", "pack", jsonl, "--tokenizer", "ByteLevel",
                     "--out", tmp_path / "x", "--on-bad-line", "skip", "--workers", 2)
    assert code == 0 and "skipped " in out and "d.jsonl:4: invalid JSON" in out, out
    assert "1 bad lines skipped" in out and PackedTokens.open(tmp_path / "x").n_docs == 3
    code, out = _cli(capsys, "tools", "tokenizer", "train", jsonl, "--vocab-size", 260,
                     "--out", tmp_path / "t.json", "--on-bad-line", "skip")
    assert code == 0 and "d.jsonl:4: invalid JSON" in out and (tmp_path / "t.json").is_file()
    code, out = _cli(capsys, "tools", "tokenizer", "train", jsonl, "--vocab-size", 260,
                     "--out", tmp_path / "u.json")
    assert code == 2 and "d.jsonl:4" in out and "--on-bad-line skip" in out
    assert not (tmp_path / "u.json").exists()


def test_demo_corpus_replaces_a_file_only_with_force(capsys, tmp_path):
    out_path = tmp_path / "c.jsonl"
    out_path.write_text('{"text": "mine"}\n')
    code, out = _cli(capsys, "tools", "demo-corpus", out_path, "--target-mb", "0.01")
    assert code == 2 and "--force" in out and out_path.read_text() == '{"text": "mine"}\n'
    code, out = _cli(capsys, "tools", "demo-corpus", out_path, "--target-mb", "0.01", "--force")
    assert code == 0 and out_path.stat().st_size > 10_000
