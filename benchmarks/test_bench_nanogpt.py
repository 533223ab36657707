"""`llm_gym recipe run gpt2-tiny` beside a loop written the way nanoGPT's train.py is.

The same model dimensions (4 layers, 4 heads, 128 wide, vocabulary 4096, sequence 128,
batch 16, fp32, no compile), the same packed demo tokens, the same AdamW settings and the
same thread count (the loop runs in a fresh process each round, as nanoGPT's train.py
would, so the runner's process-wide settings cannot help or hurt it). Rounds alternate
which side goes first, so the shared machine's drift hits both alike; the ratio of the
medians is reported (target: runner / nanoGPT-style >= 1.02). ``nanogpt_style.py`` says
what the loop does.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import torch

from llm_gym.data.packed import HEADER_SIZE
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

STEPS, LOG_EVERY, ROUNDS = 50, 10, 4
OVERRIDES = [
    f"trainer.max_steps={STEPS}", f"trainer.log_every={LOG_EVERY}", "trainer.eval_every=null",
    "trainer.checkpoint_every=null", "trainer.sample_prompt=null", "trainer.loggers=[]",
    "trainer.compile=false", "trainer.param_dtype=fp32", "trainer.seq_len=128",
    "trainer.micro_batch_size=16", "trainer.grad_accumulation=1", "trainer.grad_clip=1.0",
    "model.config.n_layer=4", "model.config.n_head=4", "model.config.n_embd=128",
    "tokenizer.config.vocab_size=4096", f"scheduler.config.warmup_steps={STEPS // 10}",
]


def runner_tokens_per_s(run_dir: Path) -> float:
    run_recipe("gpt2-tiny", OVERRIDES, run_dir=run_dir)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r]
    return statistics.median(r["tokens_per_s"] for r in records[1:])  # after the warm-up


def test_runner_vs_nanogpt_style_loop(benchmark, bench_targets, demo_cache, tmp_path):
    runner_tokens_per_s(tmp_path / "prepare")  # prepares the demo data, warms the caches
    bin_path = next(demo_cache.glob("pack-8mb-*.bin"))
    # The train split's tokens (the recipe keeps the last 5% for evaluation).
    n_tokens = int((bin_path.stat().st_size - HEADER_SIZE) // 2 * 0.95)

    def nano() -> float:
        # A fresh process each round: the runner's process-wide settings (its allocator
        # tuning, runner/host_memory.py) must not speed up the yardstick, nor the reverse.
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("nanogpt_style.py")), str(bin_path),
             str(n_tokens), str(STEPS), str(LOG_EVERY), str(torch.get_num_threads())],
            capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    runner, nanogpt = [], []
    for i in range(ROUNDS):
        if i % 2 == 0:
            runner.append(runner_tokens_per_s(tmp_path / f"run{i}"))
            nanogpt.append(nano())
        else:
            nanogpt.append(nano())
            runner.append(runner_tokens_per_s(tmp_path / f"run{i}"))
    benchmark.extra_info.update(runner=runner, nanogpt_style=nanogpt,
                                threads=torch.get_num_threads())
    benchmark.pedantic(runner_tokens_per_s, args=(tmp_path / "timed",), rounds=1, iterations=1)
    r, n = statistics.median(runner), statistics.median(nanogpt)
    pairs = ", ".join(f"{a / b:.3f}" for a, b in zip(runner, nanogpt, strict=True))
    print(f"\nrunner vs nanoGPT-style loop (gpt2-tiny shape, CPU, {torch.get_num_threads()} "
          f"threads): runner {r:,.0f} tok/s | nanoGPT-style {n:,.0f} tok/s | ratio {r / n:.3f} "
          f"(rounds: {pairs}; target >= 1.02)")
    bench_targets.add("runner / nanoGPT-style loop, gpt2-tiny, CPU", r / n, at_least=1.02)
