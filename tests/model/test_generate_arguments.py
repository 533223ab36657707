"""Sampling arguments no model can use are refused by one shared check, naming the
argument, whoever calls: GPT2.generate from Python (a ValueError) or stream_tokens, what
`llm_gym generate` runs (a UserError: exit 2, no traceback)."""

from __future__ import annotations

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.runner.generation import stream_tokens
from tests.model import test_llama
from tests.model.test_gpt2 import random_ids, tiny

BAD = [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 1e-40}, "temperature"),  # logits / 1e-40 overflow to inf
    ({"temperature": "hot"}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": -3}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"max_new_tokens": -1}, "max_new_tokens"),  # range(-1): silently nothing
    ({"max_new_tokens": 2.0}, "max_new_tokens"),
    ({"max_new_tokens": True}, "max_new_tokens"),
]


@pytest.mark.parametrize("family", ["GPT2", "Llama"])
@pytest.mark.parametrize(("change", "argument"), BAD, ids=lambda v: repr(v))
def test_generate_refuses_by_argument_name(change, argument, family):
    model = (tiny() if family == "GPT2" else test_llama.tiny()).eval()
    kwargs = {"max_new_tokens": 3, "temperature": 1.0, "top_k": None, **change}
    with pytest.raises(ValueError, match=rf"^{argument} must be") as refused:
        model.generate(random_ids(batch=1, seq=4), **kwargs)
    assert isinstance(refused.value, UserError)  # the CLI prints it without a traceback


@pytest.mark.parametrize(("change", "argument"), BAD, ids=lambda v: repr(v))
def test_stream_tokens_refuses_before_sampling(change, argument):
    kwargs = {"max_new_tokens": 3, "temperature": 1.0, "top_k": None, **change}
    count = kwargs.pop("max_new_tokens")
    with pytest.raises(UserError, match=rf"^{argument} must be"):
        list(stream_tokens(tiny().eval(), [1, 2], count, **kwargs))


def test_usable_values_still_sample():
    model = tiny().eval()
    prompt = random_ids(batch=1, seq=4)
    g = torch.Generator().manual_seed(0)
    assert model.generate(prompt, 0).shape == (1, 4)
    assert model.generate(prompt, 2, temperature=0).shape == (1, 6)  # greedy
    assert model.generate(prompt, 2, temperature=1e-4, top_k=1, generator=g).shape == (1, 6)
    assert len(list(stream_tokens(model, [1, 2], 3, temperature=2, top_k=5))) == 3
