"""Runner throughput beside a plain hand-written PyTorch loop: same GPT-2, batch, optimizer.

Both train the same model on the same packed data for the same number of steps, in
rounds that alternate which side runs first, so that the shared machine's noise hits
both alike; the ratio of tokens per second is printed (targets: runner / plain >= 1.0
for one process, >= 0.98 for two FSDP2 processes; data wait < 2% of step time).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

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


def _alternating(rounds: int, first, second) -> None:  # noqa: ANN001
    """Call both once per round, the first one first in even rounds only."""
    for i in range(rounds):
        for side in ((first, second) if i % 2 == 0 else (second, first)):
            side(i)


def test_runner_vs_plain_loop(benchmark, bench_targets, demo_cache, tmp_path):
    runner, plain, waits = [], [], []
    _runner_tokens_per_s(tmp_path / "warmup")  # prepares the demo data once
    _alternating(ROUNDS, lambda i: runner.append(_runner_tokens_per_s(tmp_path / f"run{i}",
                                                                      waits)),
                 lambda i: plain.append(_plain_tokens_per_s(demo_cache)))
    benchmark.extra_info.update(runner=runner, plain=plain)
    benchmark.pedantic(_runner_tokens_per_s, args=(tmp_path / "timed",), rounds=1,
                       iterations=1)
    r, p = statistics.median(runner), statistics.median(plain)
    wait = statistics.median(waits)
    print(f"\nrunner vs plain loop (1 process, CPU): runner {r:,.0f} tok/s | plain {p:,.0f} "
          f"tok/s | ratio {r / p:.3f} (target >= 1.0) | waiting for data "
          f"{wait:.2f}% of step time (target < 2%)")
    bench_targets.add("runner / plain loop, 1 process, CPU", r / p, at_least=1.0)
    bench_targets.add("time the runner waits for data", wait, at_most=2.0, unit="%", digits=2)


def test_two_process_fsdp_throughput_and_mfu(benchmark, bench_targets, demo_cache, tmp_path):
    """2 gloo processes, FSDP2, each with half of the same global batch as 1 process;
    beside a hand-written FSDP2 loop with the same model, data and optimizer."""
    from llm_gym.runner.launcher import launch_local

    half = [o if o != "trainer.micro_batch_size=8" else "trainer.micro_batch_size=4"
            for o in OVERRIDES]
    _runner_records(tmp_path / "warmup", OVERRIDES)  # prepares the demo data once
    prefix = str(next(demo_cache.glob("pack-*.bin")).with_suffix(""))
    one, two, plain_two = [], [], []

    def runner_side(i: int) -> None:
        one.extend(_runner_records(tmp_path / f"one{i}", OVERRIDES))
        two.extend(_runner_records(tmp_path / f"two{i}", half, nproc=2))

    def plain_side(i: int) -> None:
        plain_two.append(launch_local(2, plain_fsdp_worker, (prefix, 4, STEPS, LOG_EVERY))[0])

    _alternating(2, runner_side, plain_side)
    benchmark.pedantic(_runner_records, args=(tmp_path / "timed", half, 2), rounds=1,
                       iterations=1)
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
    bench_targets.add("runner / hand-written FSDP2 loop, 2 processes, CPU", t2 / p2,
                      at_least=0.98)
    bench_targets.add("2-process FSDP2 / 1 process tok/s, same global batch", t2 / t1)
    bench_targets.add("MFU, 1 process, CPU", 100 * m1, at_most=100.0, unit="%", digits=1)
