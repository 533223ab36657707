"""The simplest tokenizer: one id per UTF-8 byte, plus an end-of-document id.

Needs no files and no training, which makes it the tokenizer of tests and smoke recipes.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_gym.data.tokenizer import EOD_TOKEN, fingerprint_of
from llm_gym.registry import ComponentConfig, component


class ByteLevelTokenizer:
    """Ids 0..255 are the bytes of the UTF-8 text; 256 ends a document (vocabulary 257)."""

    vocab_size = 257
    eod_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        # Bytes between end-of-document markers are decoded separately, so a document cut
        # mid-character spoils only itself; invalid bytes become U+FFFD instead of raising.
        pieces: list[str] = []
        run = bytearray()
        for i in ids:
            if i == self.eod_id:
                pieces.append(run.decode("utf-8", errors="replace") + EOD_TOKEN)
                run.clear()
            elif 0 <= i < 256:
                run.append(i)
            else:
                raise ValueError(f"token id {i} is outside the byte-level vocabulary (0..256)")
        pieces.append(run.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def fingerprint(self) -> str:
        return fingerprint_of("byte-level/1", {"vocab_size": self.vocab_size, "eod": self.eod_id})

    def __repr__(self) -> str:
        return "ByteLevelTokenizer()"


@component("tokenizer", "ByteLevel", version=1)
class ByteLevelTokenizerConfig(ComponentConfig):
    """One id per UTF-8 byte plus an end-of-document id (vocabulary 257); needs no files."""

    def build(self) -> ByteLevelTokenizer:
        return ByteLevelTokenizer()
