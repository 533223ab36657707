"""The one sampler with a KV cache: cached decoding matches running the whole context."""

from __future__ import annotations

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.kv_cache import CachedDecoding
from llm_gym.sampling import next_token, sample_tokens
from llm_gym_components.models.gpt2 import GPT2
from llm_gym_components.models.llama import Llama
from tests.contract.toy_plugin import ToyLM

MODELS = {
    "gpt2": lambda: GPT2(vocab_size=101, n_positions=24, n_embd=32, n_layer=2, n_head=4),
    "llama-gqa": lambda: Llama(vocab_size=101, max_seq_len=24, n_embd=32, n_layer=2,
                               n_head=4, n_kv_head=2, tie_embeddings=True),
    "llama-qk-norm": lambda: Llama(vocab_size=101, max_seq_len=24, n_embd=32, n_layer=2,
                                   n_head=4, n_kv_head=1, qk_norm=True),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().eval()


@pytest.mark.parametrize("name", MODELS)
def test_cached_logits_equal_the_whole_context_run(name):
    model = _model(name)
    ids = torch.randint(0, 101, (3, 16))
    full = model(ids)
    cache = model.new_kv_cache(3, 24)
    prefill = model(ids[:, :6], kv_cache=cache)
    steps = [model(ids[:, t:t + 1], kv_cache=cache)[:, 0] for t in range(6, 16)]
    torch.testing.assert_close(prefill, full[:, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 6:], atol=1e-5, rtol=0)
    # A chunk of several new tokens after the prefill is masked causally too.
    cache = model.new_kv_cache(3, 24)
    model(ids[:, :6], kv_cache=cache)
    torch.testing.assert_close(model(ids[:, 6:11], kv_cache=cache), full[:, 6:11], atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_tokens_are_the_same_with_and_without_the_cache(name):
    model = _model(name)
    prompt = torch.randint(0, 101, (2, 5))
    # 40 new tokens run past max_seq_len (24): the window slides, as the uncached path's.
    cached = sample_tokens(model, prompt, 40, temperature=0)
    plain = sample_tokens(model, prompt, 40, temperature=0, use_cache=False)
    assert cached.shape == (2, 45)
    assert torch.equal(cached, plain)


def test_a_seed_gives_the_same_sample_and_the_model_generate_uses_the_sampler():
    model = _model("gpt2")
    prompt = torch.randint(0, 101, (2, 4))

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 12, temperature=1.0, top_k=20, top_p=0.9, generator=g)

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_top_p_keeps_the_smallest_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two, 0.85 three
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    for top_p, allowed in ((0.7, {0, 1}), (0.8, {0, 1}), (0.85, {0, 1, 2}), (1.0, {0, 1, 2, 3})):
        g = torch.Generator().manual_seed(0)
        drawn = next_token(logits, temperature=1.0, top_k=None, top_p=top_p, generator=g)
        assert set(drawn.flatten().tolist()) == allowed, top_p
    g = torch.Generator().manual_seed(0)
    drawn = next_token(logits, temperature=1.0, top_k=None, top_p=0.7, generator=g)
    share = (drawn == 0).float().mean().item()  # 0.5 / 0.8 of the renormalised nucleus
    assert abs(share - 0.625) < 0.05


def test_a_stop_token_ends_each_row_and_pads_it():
    model = _model("gpt2")
    prompt = torch.randint(0, 101, (4, 3))
    free = sample_tokens(model, prompt, 30, temperature=1.0,
                         generator=torch.Generator().manual_seed(1))
    stop = int(free[0, 5])  # a token row 0 emits at its third step
    out = sample_tokens(model, prompt, 30, temperature=1.0, stop_token=stop,
                        generator=torch.Generator().manual_seed(1))
    for row in range(4):
        new = out[row, 3:].tolist()
        if stop in new:
            first = new.index(stop)
            assert all(t == stop for t in new[first:])  # finished rows hold the stop token
            assert new[:first] == free[row, 3:3 + first].tolist()
    if all(stop in out[row, 3:].tolist() for row in range(4)):
        assert out.size(1) < free.size(1)  # every row finished: sampling ended early


def test_a_model_without_a_cache_samples_through_the_same_sampler():
    torch.manual_seed(0)
    toy = ToyLM(50, 16, 2, 8).eval()
    assert not isinstance(toy, CachedDecoding)
    out = sample_tokens(toy, torch.zeros(1, 3, dtype=torch.long), 10, temperature=0)
    assert out.shape == (1, 13)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), True])
def test_top_p_out_of_range_is_refused_by_name(bad):
    with pytest.raises(UserError, match="top_p"):
        sample_tokens(_model("gpt2"), torch.zeros(1, 2, dtype=torch.long), 2, top_p=bad)


def test_the_cache_refuses_more_positions_than_it_holds():
    model = _model("llama-gqa")
    cache = model.new_kv_cache(1, 24)
    model(torch.zeros(1, 20, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("name", MODELS)
def test_after_the_prompt_each_step_runs_one_token(name, monkeypatch):
    model = _model(name)
    lengths: list[int] = []
    forward = type(model).forward

    def recording(self, input_ids, kv_cache=None):  # noqa: ANN001, ANN202
        lengths.append(input_ids.size(1))
        return forward(self, input_ids, kv_cache=kv_cache)

    monkeypatch.setattr(type(model), "forward", recording)
    sample_tokens(model, torch.randint(0, 101, (1, 7)), 10, temperature=0)
    assert lengths == [7] + [1] * 9


@pytest.mark.parametrize("name", MODELS)
def test_a_prompt_longer_than_the_window_is_cropped_alike_with_and_without_the_cache(name):
    model = _model(name)
    prompt = torch.randint(0, 101, (2, 30))  # max_seq_len is 24
    cached = sample_tokens(model, prompt, 8, temperature=0)
    plain = sample_tokens(model, prompt, 8, temperature=0, use_cache=False)
    assert torch.equal(cached[:, :30], prompt)  # the whole prompt is returned, uncropped
    assert torch.equal(cached, plain)
