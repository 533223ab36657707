"""MultipleChoice scoring (all choices of an example in one padded pass) beside one pass
per choice, each sequence alone and unpadded: the same requests, the same model.

The target (issue 17): scoring 1,000 four-choice examples with gpt2-tiny's model on a
CPU takes at most 2x the time of the 4,000 single forward passes of the same tokens.
``LLM_GYM_BENCH_MC_EXAMPLES`` sets the number of examples.
"""

from __future__ import annotations

import os
import random
import time

import torch

from llm_gym.evaluation.multiple_choice import EncodedExample, MultipleChoice
from llm_gym.runner.distributed import World
from llm_gym_components.models.gpt2 import GPT2

EXAMPLES = int(os.environ.get("LLM_GYM_BENCH_MC_EXAMPLES", "1000"))
VOCAB, SEQ = 4096, 128  # gpt2-tiny


def _examples(n: int) -> list[EncodedExample]:
    """HellaSwag-like lengths: contexts of 20 to 80 tokens, endings of 5 to 25."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        context = [rng.randrange(VOCAB) for _ in range(rng.randint(20, 80))]
        choices = [[rng.randrange(VOCAB) for _ in range(rng.randint(5, 25))] for _ in range(4)]
        out.append(EncodedExample(context, choices, [4 * len(c) for c in choices],
                                  rng.randrange(4)))
    return out


@torch.no_grad()
def _one_pass_per_choice(model: GPT2, examples: list[EncodedExample]) -> float:
    start = time.perf_counter()
    for example in examples:
        for choice in example.choices:
            full = (example.context + choice)[-(SEQ + 1):]
            logp = model(torch.tensor([full[:-1]]))[0].float().log_softmax(-1)
            targets = torch.tensor(choice)
            logp[-len(choice):].gather(-1, targets[:, None]).sum()
    return time.perf_counter() - start


def test_batched_multiple_choice_vs_one_pass_per_choice(benchmark, bench_targets):
    torch.manual_seed(0)
    model = GPT2(vocab_size=VOCAB, n_positions=SEQ, n_embd=128, n_layer=4, n_head=4)
    model.init_weights()
    model.eval()
    examples = _examples(EXAMPLES)
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"),
                  backend="none")
    evaluator = MultipleChoice(examples, world)
    evaluator.examples = examples[:20]
    evaluator.evaluate(model, lambda: False)  # warm-up
    evaluator.examples = examples
    # Alternating sides, twice each, the better of each kept: the machine may be shared.
    batched, single = [], []
    for _ in range(2):
        start = time.perf_counter()
        evaluator.evaluate(model, lambda: False)
        batched.append(time.perf_counter() - start)
        single.append(_one_pass_per_choice(model, examples))
    # pytest-benchmark's own record of one batched evaluation, for its table.
    benchmark.pedantic(evaluator.evaluate, args=(model, lambda: False), rounds=1, iterations=1)
    ratio = min(batched) / min(single)
    print(f"\n{EXAMPLES} four-choice examples, gpt2-tiny's model on CPU: batched "
          f"{min(batched):.2f} s | one pass per choice {min(single):.2f} s | ratio {ratio:.2f}")
    bench_targets.add("MultipleChoice batched / one pass per choice (time)", ratio,
                      at_most=2.0, unit="x", digits=2)
