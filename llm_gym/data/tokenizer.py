"""What the data pipeline needs from a tokenizer, and nothing more.

The core knows no concrete tokenizer; the built-in ones live in ``llm_gym_components.tokenizers``.
A tokenizer crosses process boundaries (``pack`` tokenizes in worker processes), so
implementations must pickle, and pickling should be cheap enough to do once per worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

EOD_TOKEN = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids, with one end-of-document id that text never encodes to.

    ``fingerprint()`` is a stable hash of everything that decides the ids (vocabulary,
    merges, special tokens, pre-tokenization): equal tokenizer files give equal
    fingerprints in every process and on every machine. Packed token files record it so
    training refuses data packed with another tokenizer.
    """

    vocab_size: int
    eod_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def fingerprint(self) -> str: ...


def fingerprint_of(kind: str, *parts: Any) -> str:
    """A sha256 hex digest of ``kind`` and JSON-serialisable ``parts``.

    Keys are sorted and the encoding is fixed, so the digest depends only on the values,
    never on dict order, the Python version or the platform.
    """
    h = hashlib.sha256(kind.encode("utf-8"))
    for part in parts:
        blob = json.dumps(part, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        h.update(b"\x00")
        h.update(blob.encode("utf-8"))
    return h.hexdigest()
