"""Runner throughput beside a plain hand-written PyTorch loop: same GPT-2, batch, optimizer.

Both train the same model on the same packed data for the same number of steps, in
alternating rounds so that the shared machine's noise hits both alike; the ratio of
tokens per second is printed (target: runner / plain >= 0.98).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest
from plain_loops import plain_fsdp_worker, plain_single

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

STEPS, ROUNDS, LOG_EVERY = 60, 3, 10
OVERRIDES = [
    f"trainer.max_steps={STEPS}", f"trainer.log_every={LOG_EVERY}", "trainer.eval_every=null",
    "trainer.seq_len=128", "trainer.micro_batch_size=8", "trainer.grad_clip=1.0",
    "model.config.n_embd=192", "model.config.n_layer=4", "model.config.n_head=4",
    "scheduler.config.warmup_steps=0",
]


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo")
    os.environ["LLM_GYM_DEMO_CACHE"] = str(cache)
    yield cache
    os.environ.pop("LLM_GYM_DEMO_CACHE")


def _runner_records(run_dir: Path, overrides: list[str], nproc: int = 1) -> list[dict]:
    run_recipe("gpt2-debug", overrides, run_dir=run_dir, nproc=nproc)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r]
    return records[1:]  # the first interval holds the warm-up


def _runner_tokens_per_s(run_dir: Path, waits: list[float] | None = None) -> float:
    records = _runner_records(run_dir, OVERRIDES)
    if waits is not None:
        waits += [r["data_wait_pct"] for r in records]
    return statistics.median(r["tokens_per_s"] for r in records)


def _plain_tokens_per_s(cache: Path) -> float:
    prefix = next(cache.glob("pack-*.bin")).with_suffix("")
    return plain_single(prefix, 8, STEPS, LOG_EVERY)


def test_runner_vs_plain_loop(benchmark, demo_cache, tmp_path):
    runner, plain, waits = [], [], []
    _runner_tokens_per_s(tmp_path / "warmup")  # prepares the demo data once
    for i in range(ROUNDS):
        runner.append(_runner_tokens_per_s(tmp_path / f"run{i}", waits))
        plain.append(_plain_tokens_per_s(demo_cache))
    benchmark.extra_info.update(runner=runner, plain=plain)
    benchmark.pedantic(lambda: None, rounds=1)
    r, p = statistics.median(runner), statistics.median(plain)
    print(f"\nrunner vs plain loop (1 process, CPU): runner {r:,.0f} tok/s | plain {p:,.0f} "
          f"tok/s | ratio {r / p:.3f} (target >= 0.98) | waiting for data "
          f"{statistics.median(waits):.2f}% of step time (target < 2%)")


def test_two_process_fsdp_throughput_and_mfu(benchmark, demo_cache, tmp_path):
    """2 gloo processes, FSDP2, each with half of the same global batch as 1 process;
    beside a hand-written FSDP2 loop with the same model, data and optimizer."""
    from llm_gym.runner.launcher import launch_local

    half = [o if o != "trainer.micro_batch_size=8" else "trainer.micro_batch_size=4"
            for o in OVERRIDES]
    _runner_records(tmp_path / "warmup", OVERRIDES)  # prepares the demo data once
    prefix = str(next(demo_cache.glob("pack-*.bin")).with_suffix(""))
    one, two, plain_two = [], [], []
    for i in range(2):
        one += _runner_records(tmp_path / f"one{i}", OVERRIDES)
        two += _runner_records(tmp_path / f"two{i}", half, nproc=2)
        plain_two.append(launch_local(2, plain_fsdp_worker, (prefix, 4, STEPS, LOG_EVERY))[0])
    benchmark.pedantic(lambda: None, rounds=1)
    t1 = statistics.median(r["tokens_per_s"] for r in one)
    t2 = statistics.median(r["tokens_per_s"] for r in two)
    p2 = statistics.median(plain_two)
    m1 = statistics.median(r["mfu"] for r in one)
    m2 = statistics.median(r["mfu"] for r in two)
    print(f"\nsame global batch, CPU: 1 process {t1:,.0f} tok/s (MFU {100 * m1:.1f}%) | "
          f"2 processes FSDP2 {t2:,.0f} tok/s (MFU {100 * m2:.1f}%) | 2/1 {t2 / t1:.2f} "
          f"(the 2 processes share {os.cpu_count()} cores)")
    print(f"runner vs hand-written FSDP2 loop (2 processes, CPU): runner {t2:,.0f} tok/s | "
          f"plain {p2:,.0f} tok/s | ratio {t2 / p2:.3f} (target >= 0.98)")
