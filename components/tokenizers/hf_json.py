"""Tokenizers backed by Hugging Face ``tokenizers``: any ``tokenizer.json``, and the base the
GPT-2 BPE builds on.

Two choices matter for pre-training data. Text that happens to contain the end-of-document
string (``<|endoftext|>`` in a web page) is encoded as ordinary text, never as the
end-of-document id, so a packed file has exactly one eod per document. And no post-processor
templates (BOS/CLS...) are applied: the packer adds the eod itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from tokenizers import Tokenizer as _HF

from llm_gym.data.tokenizer import EOD_TOKEN, fingerprint_of
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file, open_input
from llm_gym.registry import ComponentConfig, component


class HFTokenizer:
    """Wraps a built ``tokenizers.Tokenizer``; subclasses decide where it comes from.

    ``fingerprint`` is computed by the subclass from its source files, not from the
    library's re-serialisation, so a new ``tokenizers`` release that spells its JSON
    differently does not orphan every packed file. ``files`` are those it was read from,
    so a writer can refuse to replace them.
    """

    files: tuple[Path, ...] = ()

    def __init__(self, hf: _HF, eod_token: str, fingerprint: str, origin: str) -> None:
        eod_id = hf.token_to_id(eod_token)
        if eod_id is None:
            raise UserError(
                f"{origin}: end-of-document token {eod_token!r} is not in the vocabulary"
                " (choose another with eod_token=...)"
            )
        # Special tokens written in the text stay text; only the packer emits eod.
        hf.encode_special_tokens = True
        self._hf = hf
        # encode_batch_fast (tokenizers >= 0.20) skips computing character offsets, which we
        # never use; older releases only have encode_batch.
        self._encode_batch = getattr(hf, "encode_batch_fast", hf.encode_batch)
        self.eod_token = eod_token
        self.eod_id: int = eod_id
        # Ids can be sparse in hand-edited files; the packed dtype must hold the largest.
        self.vocab_size: int = max(hf.get_vocab(with_added_tokens=True).values()) + 1
        self._fingerprint = fingerprint
        self.origin = origin

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=False)

    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def hf_tokenizer(self) -> _HF:
        """The underlying Hugging Face tokenizer (for benchmarks and advanced use)."""
        return self._hf

    # The Rust object pickles, but loses runtime flags such as encode_special_tokens;
    # rebuilding from its JSON is explicit and costs ~0.1 s once per worker process.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "json": self._hf.to_str(),
            "eod_token": self.eod_token,
            "fingerprint": self._fingerprint,
            "origin": self.origin,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        hf = _HF.from_str(state["json"])
        HFTokenizer.__init__(self, hf, state["eod_token"], state["fingerprint"], state["origin"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.origin!r}, vocab_size={self.vocab_size})"


class HFJsonTokenizer(HFTokenizer):
    """A Hugging Face ``tokenizer.json`` file, with ``eod_token`` as the end-of-document id."""

    def __init__(self, path: str | Path, eod_token: str = EOD_TOKEN) -> None:
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: tokenizer file not found")
        try:
            with open_input(path, "a tokenizer file") as f:  # a FIFO would block read_text
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read tokenizer file: {e}") from None
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path}:{e.lineno}:{e.colno}: not a tokenizer.json (invalid JSON: {e.msg})"
            ) from None
        try:
            hf = _HF.from_str(text)
        except Exception as e:  # the Rust side raises plain Exception with its own message
            raise UserError(f"{path}: not a valid Hugging Face tokenizer.json: {e}") from None
        fp = fingerprint_of("hf-json/1", spec, eod_token)
        super().__init__(hf, eod_token, fp, str(path))
        self.files = (path,)


@component("tokenizer", "HFJson", version=1)
class HFJsonTokenizerConfig(ComponentConfig):
    """A Hugging Face tokenizer.json file (e.g. from `llm_gym tools tokenizer train`)."""

    path: Path = Field(description="the tokenizer.json file")
    eod_token: str = Field(EOD_TOKEN, description="special token that ends each document")

    def preflight(self) -> Iterator[str]:
        """The file exists, is a regular file, and begins as a JSON object in UTF-8
        (its first bytes only: parsing the whole file is what build does)."""
        try:
            check_input_file(self.path, "a tokenizer.json")
            problem = _not_json_object_start(self.path)
        except UserError as exc:
            problem = exc.message
            if "no such file" in problem:
                problem += "; make one with `llm_gym tools tokenizer train`"
        if problem:
            yield f"path: {problem}"

    def build(self) -> HFJsonTokenizer:
        return HFJsonTokenizer(self.path, self.eod_token)


_HEAD_BYTES = 4096


def _not_json_object_start(path: Path) -> str | None:
    """What is wrong with the first bytes of ``path`` as a tokenizer.json, if anything."""
    try:
        with open_input(path, "a tokenizer.json") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as e:
        return f"{path}: cannot read: {e.strerror or e}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        cut_by_the_read = len(head) == _HEAD_BYTES and e.start >= len(head) - 3
        if not cut_by_the_read:
            return f"{path}: not a tokenizer.json: not UTF-8 text (byte {e.start})"
        text = head[: e.start].decode("utf-8")
    start = text.lstrip("\ufeff \t\r\n")[:1]
    if start != "{":
        seen = "it is empty" if not start else f"it begins with {start!r}"
        return f"{path}: not a tokenizer.json: a JSON object starts with '{{', {seen}"
    return None
