"""`recipe validate` checks a recipe's tokenizer files without building the tokenizer:
HFJson's path is a regular file that begins as a JSON object; GPT2BPE's two files are
there; GPT2BPE's vocabulary (from encoder.json) fits the model. Messages name the YAML
path (tokenizer.config.path, ...)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym_components.tokenizers import GPT2BPETokenizerConfig, gpt2_vocab_files


def _validate(capsys, *overrides: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", "gpt2-debug", "--allow-drift", *overrides])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def _hf_json(path: Path) -> str:
    return f"tokenizer={{type_hint: HFJson, config: {{path: '{path}'}}}}"


NOT = "not a tokenizer.json:"
HF_JSON_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (lambda p: None, "no such file (a tokenizer.json); make one with"),
    "a FIFO": (os.mkfifo, "is a FIFO (named pipe), not a regular file"),
    "a directory": (lambda p: p.mkdir(), "is a directory, not a regular file"),
    "empty": (lambda p: p.write_bytes(b""), f"{NOT} a JSON object starts with '{{', it is empty"),
    "a JSON list": (lambda p: p.write_text("[1, 2]"),
                    f"{NOT} a JSON object starts with '{{', it begins with '['"),
    "not UTF-8": (lambda p: p.write_bytes(b"\xff\xfe{}"), f"{NOT} not UTF-8 text (byte 0)"),
}


@pytest.mark.parametrize("case", sorted(HF_JSON_CASES))
def test_a_bad_hf_json_path_is_named_at_validate(capsys, tmp_path, case):
    make, expected = HF_JSON_CASES[case]
    path = tmp_path / "tokenizer.json"
    make(path)
    code, output = _validate(capsys, _hf_json(path))
    assert code == 2, output
    assert f"tokenizer.config.path: {path}: {expected}" in output, output
    assert "Traceback" not in output


def test_a_tokenizer_json_that_begins_well_passes_the_preflight(capsys, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("\n  " + json.dumps({"version": "1.0", "model": {}}))
    code, output = _validate(capsys, _hf_json(path))
    assert "tokenizer.config.path" not in output


def test_gpt2_bpe_files_that_are_missing_or_fifos_are_named(capsys, tmp_path):
    os.mkfifo(tmp_path / "vocab.bpe")
    code, output = _validate(
        capsys, f"tokenizer={{type_hint: GPT2BPE, config: {{encoder_json: '{tmp_path}/e.json',"
        f" vocab_bpe: '{tmp_path}/vocab.bpe'}}}}")
    assert code == 2, output
    assert f"tokenizer.config.encoder_json: {tmp_path}/e.json: no such file" in output
    assert f"tokenizer.config.vocab_bpe: {tmp_path}/vocab.bpe: is a FIFO" in output


def test_a_model_smaller_than_gpt2_bpe_is_refused_at_validate(capsys):
    code, output = _validate(capsys, "tokenizer={type_hint: GPT2BPE, config: {}}")
    assert code == 2, output
    assert "model.config.vocab_size: 257, below the tokenizer's 50257 ids" in output


def test_gpt2_bpe_declares_the_vocabulary_of_its_encoder_json(tmp_path):
    _, merges = gpt2_vocab_files()
    assert GPT2BPETokenizerConfig().vocab_size == 50257
    small = tmp_path / "encoder.json"
    small.write_text(json.dumps({"a": 0, "b": 1, "<|endoftext|>": 7}))
    assert GPT2BPETokenizerConfig(encoder_json=small, vocab_bpe=merges).vocab_size == 8
    assert GPT2BPETokenizerConfig(encoder_json=tmp_path / "none.json").vocab_size is None
