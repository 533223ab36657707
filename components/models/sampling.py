"""Token-by-token sampling for the built-in models, without a KV cache.

One loop for GPT-2 and Llama (context crop, temperature, top-k, one multinomial draw per
step from the given generator), so every family samples alike for a seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llm_gym.runner.sampling_args import check_sampling_args


@torch.no_grad()
def sample_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    max_seq_len: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``input_ids[B, T]`` with ``max_new_tokens`` tokens appended (``temperature=0``:
    argmax); the model sees the last ``max_seq_len`` tokens at each step."""
    # llm_gym's one check of sampling arguments: a ValueError naming the argument.
    check_sampling_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    for _ in range(max_new_tokens):
        logits = model(input_ids[:, -max_seq_len:])[:, -1, :]
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        input_ids = torch.cat([input_ids, next_id], dim=1)
    return input_ids
