"""Generating 256 tokens with the KV cache beside without it: the same model, prompt and
greedy draws (issue 16's target: cached at least 5x faster on a CPU).

The model has gpt2-tiny's width and depth with room for 16 + 256 positions, so the cache
never has to start over; rounds alternate which side runs first.
"""

from __future__ import annotations

import statistics
import time

import torch

from llm_gym.sampling import sample_tokens
from llm_gym_components.models.gpt2 import GPT2

PROMPT, NEW, ROUNDS = 16, 256, 4


def _seconds(model: GPT2, prompt: torch.Tensor, use_cache: bool) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = sample_tokens(model, prompt, NEW, temperature=0, use_cache=use_cache)
    return time.perf_counter() - start, out


def test_kv_cache_generation_vs_uncached(benchmark, bench_targets):
    torch.manual_seed(0)
    model = GPT2(vocab_size=4096, n_positions=512, n_embd=128, n_layer=4, n_head=4).eval()
    prompt = torch.randint(0, 4096, (1, PROMPT))
    _seconds(model, prompt, True)  # warm-up
    cached, plain = [], []
    for i in range(ROUNDS):
        for use_cache in ((True, False) if i % 2 == 0 else (False, True)):
            seconds, out = _seconds(model, prompt, use_cache)
            (cached if use_cache else plain).append(seconds)
            if use_cache:
                tokens_cached = out
            else:
                tokens_plain = out
        assert torch.equal(tokens_cached, tokens_plain)  # the same greedy tokens
    benchmark.extra_info.update(cached=cached, uncached=plain)
    benchmark.pedantic(_seconds, args=(model, prompt, True), rounds=1, iterations=1)
    c, p = statistics.median(cached), statistics.median(plain)
    print(f"\nKV cache, {NEW} new tokens after {PROMPT} (gpt2-tiny's width and depth, CPU, "
          f"{torch.get_num_threads()} threads): cached {c:.3f} s | uncached {p:.3f} s | "
          f"speed-up {p / c:.2f}x (target >= 5)")
    bench_targets.add("KV-cache generation speed-up, 256 tokens, CPU", p / c, at_least=5.0,
                      digits=2)
