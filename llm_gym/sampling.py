"""The one sampler: token by token, for every model that satisfies the model contract.

``generate`` of the built-in models, the trainer's end-of-run sample and ``llm_gym
generate`` all draw through :func:`iter_tokens`: the context cropped to the model's
``max_seq_len``, temperature (0 is greedy), top-k, then top-p (nucleus), and one
``torch.multinomial`` draw per step from the given generator. A model that declares
cached decoding (``llm_gym/kv_cache.py``) runs the prompt once and then one token per
step; any other model runs the whole (cropped) context each step. Both give the same
tokens (greedy) and the same logits to float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from llm_gym.kv_cache import CachedDecoding
from llm_gym.model_contract import as_language_model
from llm_gym.runner.sampling_args import check_sampling_args


def next_token(logits: torch.Tensor, *, temperature: float, top_k: int | None,
               top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """One token id ``[B, 1]`` from the last position's ``logits[B, V]``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        # Keep the smallest set of likeliest tokens whose probability reaches top_p: a
        # token is dropped when the tokens likelier than it already reach it.
        probs, order = F.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


@torch.inference_mode()  # cheaper per op than no_grad; decoding keeps no tensor for autograd
def iter_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` new token ids ``[B, 1]``, one per step, continuing
    ``input_ids[B, T]``. ``use_cache=False`` forces the uncached path (for comparison)."""
    check_sampling_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p)
    max_len = as_language_model(model).max_seq_len
    cached = use_cache and isinstance(model, CachedDecoding)
    # Decoding runs eager: compiled blocks (trainer.compile) would otherwise recompile
    # for every cache length, each new step's shapes and positions being new to them.
    with torch.compiler.set_stance("force_eager") if cached else contextlib.nullcontext():
        yield from _steps(model, input_ids, max_new_tokens, max_len, cached,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          generator=generator)


def _steps(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, max_len: int,
           cached: bool, **choice) -> Iterator[torch.Tensor]:
    # Every id so far lives in one buffer, written in place: a torch.cat of the whole
    # context per token would copy it again at every step.
    prompt_len = input_ids.size(1)
    ids = input_ids.new_empty(input_ids.size(0), prompt_len + max_new_tokens)
    ids.narrow(1, 0, prompt_len).copy_(input_ids)
    n = prompt_len  # ids written so far
    cache, pending = None, None
    for _ in range(max_new_tokens):
        if cached:
            if cache is None or cache.length + pending.size(1) > max_len:
                # The window slides past max_seq_len: positions shift, so the stored keys
                # no longer hold; start again from the cropped context (what the uncached
                # path runs every step).
                cache = model.new_kv_cache(ids.size(0), max_len)
                pending = _window(ids, n, max_len)
            logits = model(pending, kv_cache=cache)[:, -1]
        else:
            logits = model(_window(ids, n, max_len))[:, -1]
        token = next_token(logits, **choice)
        pending = ids.narrow(1, n, 1)
        pending.copy_(token)
        n += 1
        yield token


def _window(ids: torch.Tensor, n: int, max_len: int) -> torch.Tensor:
    """The last ``max_len`` of the first ``n`` ids: the context the model sees."""
    return ids.narrow(1, max(0, n - max_len), min(n, max_len))


def sample_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """``input_ids[B, T]`` with up to ``max_new_tokens`` sampled tokens appended.

    With ``stop_token``, a row that emits it is finished: its later positions hold
    ``stop_token`` too, and sampling ends early once every row has finished (the result
    is then shorter than ``T + max_new_tokens``).
    """
    out = [input_ids]
    finished = torch.zeros(input_ids.size(0), 1, dtype=torch.bool, device=input_ids.device)
    for token in iter_tokens(model, input_ids, max_new_tokens, temperature=temperature,
                             top_k=top_k, top_p=top_p, generator=generator,
                             use_cache=use_cache):
        if stop_token is not None:
            token = token.masked_fill(finished, stop_token)
            finished |= token == stop_token
        out.append(token)
        if stop_token is not None and bool(finished.all()):
            break
    return torch.cat(out, dim=1)
