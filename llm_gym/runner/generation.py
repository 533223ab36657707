"""Sampling text from a model token by token, for ``llm_gym generate``.

Tokens come from the one sampler (``llm_gym/sampling.py``, with the model's KV cache where
it declares one) as they are drawn: the same draws as one ``generate(ids, n)`` call (the
same context crop, sampling and random stream), so streaming changes nothing about the
result for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from llm_gym.errors import UserError
from llm_gym.model_contract import as_language_model
from llm_gym.runner.sampling_args import check_sampling_args
from llm_gym.sampling import iter_tokens

_INCOMPLETE = "\ufffd"  # what decoders emit for a character whose bytes are not all there yet


def stream_tokens(
    model: nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_ids: Iterable[int] = (),
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids; stops before any of ``stop_ids``.

    ``temperature=0`` is greedy decoding. Deterministic for a given seed and device.
    """
    lm = as_language_model(model)  # the contract promises vocab_size and max_seq_len
    check_sampling_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p)
    if not prompt_ids:
        raise UserError("the prompt encodes to no tokens")
    vocab_size = lm.vocab_size
    if max(prompt_ids) >= vocab_size:
        raise UserError(f"the prompt has token id {max(prompt_ids)}, outside the model's "
                        f"vocabulary of {vocab_size}: tokenizer and model do not match")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = set(stop_ids)
    for drawn in iter_tokens(model, ids, max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, generator=generator):
        token = int(drawn[0, 0])
        if token in stop:
            return
        yield token


def stream_text(tokenizer: Any, prompt_ids: Sequence[int], tokens: Iterable[int]) -> Iterator[str]:
    """The text of ``tokens`` after the prompt, in pieces as soon as they are printable.

    The whole sequence is decoded each time (decoders may join pieces across tokens, e.g.
    a leading space or a UTF-8 character split over byte tokens); a piece ending in an
    unfinished character waits for the next token.
    """
    prompt = list(prompt_ids)
    base = tokenizer.decode(prompt)
    generated: list[int] = []
    shown = 0
    text = ""
    for token in tokens:
        generated.append(token)
        text = tokenizer.decode(prompt + generated)
        text = text[len(base):] if text.startswith(base) else tokenizer.decode(generated)
        if text.endswith(_INCOMPLETE) or len(text) <= shown:
            continue
        yield text[shown:]
        shown = len(text)
    if len(text) > shown:
        yield text[shown:]
