"""pack_jsonl: output equals a plain Python reference, is identical for any number of
workers, and every bad input is a UserError at file:line that leaves old outputs alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from llm_gym.data.pack import iter_jsonl_texts, pack_jsonl
from llm_gym.data.packed import PackedTokens, pack_paths
from llm_gym.errors import UserError
from llm_gym_components.tokenizers import (
    ByteLevelTokenizer,
    HFJsonTokenizer,
    train_bpe_tokenizer,
)

TEXTS = [
    "Hello world",
    "naïve café, 日本語 and 🎉 emoji",
    "",  # an empty document still gets its eod
    "the literal <|endoftext|> inside a document",
    "line\nbreaks\r\nand\ttabs and \u2028 a unicode line separator",
    "long " * 700,  # longer than any block or batch
    "x",
]


def write_jsonl(path: Path, texts: list[str], *, blank_every: int = 0, crlf: bool = False) -> Path:
    nl = "\r\n" if crlf else "\n"
    with path.open("w", encoding="utf-8", newline="") as f:
        for i, text in enumerate(texts):
            if blank_every and i % blank_every == 0:
                f.write("  " + nl)
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=i % 2 == 0) + nl)
    return path


def corpus(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    return [TEXTS[i % len(TEXTS)] + f" #{i}" * int(rng.integers(0, 20)) for i in range(n)]


def reference(tokenizer, texts: list[str]) -> tuple[list[int], list[int]]:
    """Tokens and offsets computed the obvious way, one document at a time."""
    tokens, offsets = [], [0]
    for text in texts:
        tokens += tokenizer.encode(text) + [tokenizer.eod_id]
        offsets.append(len(tokens))
    return tokens, offsets


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> HFJsonTokenizer:
    d = tmp_path_factory.mktemp("bpe")
    return HFJsonTokenizer(
        train_bpe_tokenizer(write_jsonl(d / "c.jsonl", corpus(300)), 320, d / "t.json")
    )


def files_of(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("tok_name", ["byte", "bpe"])
def test_matches_reference(tmp_path: Path, tok_name: str, bpe) -> None:
    tok = ByteLevelTokenizer() if tok_name == "byte" else bpe
    texts = corpus(120)
    src = write_jsonl(tmp_path / "in.jsonl", texts, blank_every=9)
    summary = pack_jsonl(src, tok, tmp_path / "out", batch_docs=16)
    tokens, offsets = reference(tok, texts)
    p = PackedTokens.open(tmp_path / "out")
    assert p.tokens.tolist() == tokens and p.offsets.tolist() == offsets
    assert p.fingerprint == tok.fingerprint() and p.eod_id == tok.eod_id
    assert (summary.n_docs, summary.n_tokens, summary.n_empty_lines) == (120, len(tokens), 14)
    assert summary.bytes_read == src.stat().st_size and summary.dtype == "uint16"
    # Exactly one eod per document, at its end, even where the text spells "<|endoftext|>".
    assert int((p.tokens == tok.eod_id).sum()) == p.n_docs
    assert all(p.document(i)[-1] == tok.eod_id for i in range(p.n_docs))
    assert str(src) in str(summary) and "120 documents" in str(summary)


def test_identical_bytes_for_any_number_of_workers(tmp_path: Path, bpe) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", corpus(400), blank_every=13)
    outputs = []
    for workers in (1, 2, 3):
        pack_jsonl(src, bpe, tmp_path / f"w{workers}", workers=workers, batch_docs=7)
        outputs.append([f.read_bytes() for f in pack_paths(tmp_path / f"w{workers}")])
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][0] != b""


def test_crlf_and_batch_size_do_not_change_output(tmp_path: Path) -> None:
    texts = corpus(50)
    tok = ByteLevelTokenizer()
    pack_jsonl(write_jsonl(tmp_path / "lf.jsonl", texts), tok, tmp_path / "lf", batch_docs=1)
    crlf = write_jsonl(tmp_path / "crlf.jsonl", texts, crlf=True)
    pack_jsonl(crlf, tok, tmp_path / "crlf", batch_docs=1000, progress=True)
    for a, b in zip(pack_paths(tmp_path / "lf"), pack_paths(tmp_path / "crlf"), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_field_key_and_dotted_path(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"meta": {"body": "ab"}, "meta.body": "literal key wins"}\n{"meta": {"body": "cd"}}\n',
        encoding="utf-8",
    )
    pack_jsonl(src, ByteLevelTokenizer(), tmp_path / "out", field="meta.body")
    p = PackedTokens.open(tmp_path / "out")
    assert [bytes(p.document(i)[:-1].tolist()).decode() for i in range(2)] == [
        "literal key wins",
        "cd",
    ]


def test_replaces_an_existing_pack(tmp_path: Path) -> None:
    tok = ByteLevelTokenizer()
    pack_jsonl(write_jsonl(tmp_path / "a.jsonl", ["first"]), tok, tmp_path / "out")
    pack_jsonl(write_jsonl(tmp_path / "b.jsonl", ["second", "third"]), tok, tmp_path / "out")
    assert PackedTokens.open(tmp_path / "out").n_docs == 2
    assert files_of(tmp_path) == ["a.jsonl", "b.jsonl", "out.bin", "out.idx"]


# --- bad input: UserError at file:line, old outputs byte-identical, no temp files ---------

GOOD = '{"text": "fine"}\n'
BAD_INPUTS = {
    "bad_json": (GOOD * 20 + '{"text": "unterminated}\n' + GOOD, ":21:", "invalid JSON"),
    "missing_field": (GOOD * 3 + '{"body": "x"}\n', ":4:", "no field 'text' (fields: 'body')"),
    "not_a_string": (GOOD + '{"text": ["x"]}\n', ":2:", "field 'text' is a list"),
    "not_an_object": (GOOD * 2 + "\n" + "[1, 2]\n", ":4:", "expected a JSON object, got list"),
    "invalid_utf8": (GOOD * 5 + '{"text": "caf\xe9"}\n', ":6:", "invalid UTF-8 at byte 14"),
    "empty_file": ("", ":", "no documents to pack (the file is empty)"),
    "only_blank": ("\n  \n\r\n", ":", "no documents to pack (the file has only blank lines)"),
}


# Every case in-process; the worker path (the error travels back from another process)
# for two of them, since the parser is the same code.
@pytest.mark.parametrize(
    "case,workers", [(c, 1) for c in BAD_INPUTS] + [("bad_json", 2), ("invalid_utf8", 2)]
)
def test_bad_input_is_reported_and_leaves_outputs_alone(
    tmp_path: Path, case: str, workers: int
) -> None:
    content, where, phrase = BAD_INPUTS[case]
    src = tmp_path / "in.jsonl"
    # latin-1 writes the \xe9 as one byte: an invalid UTF-8 sequence on line 6.
    src.write_bytes(content.encode("latin-1" if case == "invalid_utf8" else "utf-8"))
    tok = ByteLevelTokenizer()
    pack_jsonl(write_jsonl(tmp_path / "old.jsonl", ["previous pack"]), tok, tmp_path / "out")
    before = [f.read_bytes() for f in pack_paths(tmp_path / "out")]
    with pytest.raises(UserError) as info:
        pack_jsonl(src, tok, tmp_path / "out", workers=workers, batch_docs=4)
    message = str(info.value)
    assert message.startswith(f"{src}{where}") and phrase in message, message
    assert [f.read_bytes() for f in pack_paths(tmp_path / "out")] == before
    assert files_of(tmp_path) == ["in.jsonl", "old.jsonl", "out.bin", "out.idx"]


def test_missing_source_and_bad_arguments(tmp_path: Path) -> None:
    tok = ByteLevelTokenizer()
    with pytest.raises(
        UserError, match=re.escape(f"{tmp_path / 'no.jsonl'}: no such file (the JSONL file)")
    ):
        pack_jsonl(tmp_path / "no.jsonl", tok, tmp_path / "out")
    with pytest.raises(UserError, match="is a directory"):
        pack_jsonl(tmp_path, tok, tmp_path / "out")
    with pytest.raises(UserError, match="workers and batch_docs must be >= 1"):
        pack_jsonl(tmp_path / "x", tok, tmp_path / "out", workers=0)
    assert files_of(tmp_path) == []


class OutOfRangeTokenizer(ByteLevelTokenizer):
    def encode_batch(self, texts):
        return [[300] for _ in texts]


def test_tokenizer_ids_outside_its_vocabulary(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ["a", "b", "c"])
    with pytest.raises(UserError, match=re.escape(f"{src}:1-3: tokenizer") + ".*produced id 300"):
        pack_jsonl(src, OutOfRangeTokenizer(), tmp_path / "out")
    assert files_of(tmp_path) == ["in.jsonl"]


def test_iter_jsonl_texts_streams_fields(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", TEXTS, blank_every=2)
    assert list(iter_jsonl_texts(src, batch_docs=2)) == TEXTS


class WideTokenizer(ByteLevelTokenizer):
    """Byte ids, but a vocabulary too large for uint16."""

    vocab_size = 70_000
    eod_id = 69_999


def test_large_vocabularies_pack_as_uint32(tmp_path: Path) -> None:
    texts = corpus(20)
    tok = WideTokenizer()
    summary = pack_jsonl(write_jsonl(tmp_path / "in.jsonl", texts), tok, tmp_path / "out")
    p = PackedTokens.open(tmp_path / "out")
    assert summary.dtype == "uint32" and p.tokens.dtype == np.dtype("<u4")
    assert p.tokens.tolist() == reference(tok, texts)[0]
