"""llama-tiny beside gpt2-tiny through the runner: tokens per second and MFU, same batch.

Both recipes train their own model (about the same parameter count: 1.26M and 1.33M) on
the same demo data for the same steps, in rounds that alternate which runs first so
that a shared machine's noise hits both alike. Reported, no target: the ratio of tokens
per second (llama / gpt2) and each one's MFU (the runner's, against the CPU's measured
matmul peak).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

STEPS, ROUNDS, LOG_EVERY = 30, 2, 5
OVERRIDES = [f"trainer.max_steps={STEPS}", f"trainer.log_every={LOG_EVERY}",
             "trainer.eval_every=null", "trainer.checkpoint_every=1000", "trainer.loggers=[]",
             "scheduler.config.warmup_steps=3"]


def _measure(recipe: str, run_dir: Path) -> tuple[float, float]:
    """Median tokens per second and MFU over the logged intervals but the first (warm-up)."""
    run_recipe(recipe, OVERRIDES, run_dir=run_dir, allow_drift=True)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r][1:]
    return (statistics.median(r["tokens_per_s"] for r in records),
            statistics.median(r["mfu"] for r in records))


def test_llama_tiny_vs_gpt2_tiny(benchmark, bench_targets, demo_cache, tmp_path):  # noqa: ANN001
    results: dict[str, list[tuple[float, float]]] = {"gpt2-tiny": [], "llama-tiny": []}
    _measure("gpt2-tiny", tmp_path / "warmup")  # prepares the demo data once
    for i in range(ROUNDS):
        order = list(results) if i % 2 == 0 else list(reversed(results))
        for recipe in order:
            results[recipe].append(_measure(recipe, tmp_path / f"{recipe}-{i}"))
    tps = {k: statistics.median(t for t, _ in v) for k, v in results.items()}
    mfu = {k: statistics.median(m for _, m in v) for k, v in results.items()}
    ratio = tps["llama-tiny"] / tps["gpt2-tiny"]
    print(f"\ntokens/s: gpt2-tiny {tps['gpt2-tiny']:,.0f}, llama-tiny {tps['llama-tiny']:,.0f}"
          f" (llama / gpt2 = {ratio:.3f}); MFU: gpt2-tiny {mfu['gpt2-tiny']:.1%}, "
          f"llama-tiny {mfu['llama-tiny']:.1%}")
    bench_targets.add("llama-tiny / gpt2-tiny tokens per second", ratio)
    bench_targets.add("gpt2-tiny MFU (CPU)", 100 * mfu["gpt2-tiny"], unit="%")
    bench_targets.add("llama-tiny MFU (CPU)", 100 * mfu["llama-tiny"], unit="%")
    benchmark.extra_info.update(tokens_per_s=tps, mfu=mfu, ratio=ratio)
    benchmark.pedantic(lambda: None, rounds=1)
