"""The loss compiled (as the runner does under trainer.compile) beside it eager.

Cross-entropy over the logits (batch x seq x vocab) is the step's most memory-bound
work: eager, the fp32 upcast and the log-softmax each write a full fp32 copy of the
logits. Measured side by side, forward and backward, from fp32 and from bf16 logits.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from llm_gym_components.losses.cross_entropy import CrossEntropyLoss

SHAPE = (8, 256, 16384)  # batch, sequence, vocabulary


def _median_ms(loss_fn, logits: torch.Tensor, targets: torch.Tensor, calls: int = 10) -> float:
    for _ in range(3):  # warm-up (and compilation)
        loss_fn(logits, targets).backward()
    times = []
    for _ in range(calls):
        logits.grad = None
        start = time.perf_counter()
        loss_fn(logits, targets).backward()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_compiled_loss_vs_eager(benchmark, bench_targets, dtype):
    torch.manual_seed(0)
    logits = torch.randn(*SHAPE, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, SHAPE[-1], SHAPE[:2])
    eager, compiled = CrossEntropyLoss(-100, 0.0), torch.compile(CrossEntropyLoss(-100, 0.0))
    torch.testing.assert_close(compiled(logits, targets), eager(logits, targets))
    eager_ms = _median_ms(eager, logits, targets)
    compiled_ms = _median_ms(compiled, logits, targets)
    benchmark.pedantic(lambda: compiled(logits, targets).backward(), rounds=3, iterations=1)
    print(f"\ncross-entropy fwd+bwd over {'x'.join(map(str, SHAPE))} {str(dtype)[6:]} logits: "
          f"eager {eager_ms:.1f} ms | compiled {compiled_ms:.1f} ms | "
          f"speed-up {eager_ms / compiled_ms:.2f}x")
    bench_targets.add(f"compiled / eager cross-entropy speed-up, {str(dtype)[6:]} logits",
                      eager_ms / compiled_ms, unit="x", digits=2)
