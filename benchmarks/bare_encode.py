"""The bare side of the pack benchmark: Hugging Face ``encode_batch`` in worker processes.

A module of its own so that a spawned worker imports only this and what unpickling the
tokenizer needs, the same as pack's workers (llm_gym.data.pack and the tokenizer's
module): had the workers lived in the test file, each would import pytest and the
benchmark's own imports too, and the baseline would pay a start-up the packer does not.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

_bare: dict = {}


def _init(tokenizer) -> None:  # noqa: ANN001 - a Tokenizer with .hf_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _bare["hf"] = tokenizer.hf_tokenizer


def _encode(texts: list[str]) -> int:
    encodings = _bare["hf"].encode_batch_fast(texts, add_special_tokens=False)
    return sum(len(e.ids) for e in encodings)


def bare_encode_batch(tok, texts: list[str], workers: int, batch_docs: int) -> int:  # noqa: ANN001
    """Token ids of ``texts`` encoded in batches of ``batch_docs`` over ``workers``
    spawned processes (in this process for one worker)."""
    batches = [texts[i : i + batch_docs] for i in range(0, len(texts), batch_docs)]
    if workers == 1:
        _bare["hf"] = tok.hf_tokenizer
        return sum(map(_encode, batches))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, ctx, initializer=_init, initargs=(tok,)) as pool:
        return sum(pool.map(_encode, batches))
