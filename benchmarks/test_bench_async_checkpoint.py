"""Training time lost to checkpoints of gpt2-tiny: synchronous beside asynchronous saves.

The same gpt2-tiny run (its model, batch and optimizer; 40 steps) trains three ways: with
no checkpoints, with a checkpoint every 10 steps saved synchronously, and the same saved
in the background (trainer.async_checkpoint), in rounds that alternate the order.

Each step's time is read from the metrics (one record per step: tokens / tokens_per_s,
which counts a step slowed by a writer thread beside it), with the time the loop spent
on checkpoints (checkpoint_wait_s). A run's excess is what its steps took beyond its own
median step, plus that wait: a run-to-run change of speed cancels out, and a checkpoint
shows as the wait and the slow steps after it. The time lost per checkpoint is a mode's
excess minus the excess of the run without checkpoints (its ordinary outliers), over
the checkpoints inside the timed steps (10, 20 and 30; step 40's save comes after its
last record). Target: asynchronous at most a quarter of synchronous.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics

STEPS, EVERY, ROUNDS = 40, 10, 2
TIMED_SAVES = STEPS // EVERY - 1
BASE = [f"trainer.max_steps={STEPS}", "trainer.log_every=1", "trainer.eval_every=null",
        "trainer.sample_prompt=null", "trainer.loggers=[]", "trainer.keep_last=2",
        "scheduler.config.warmup_steps=5"]
MODES = {
    "none": ["trainer.checkpoint_every=null"],
    "sync": [f"trainer.checkpoint_every={EVERY}"],
    "async": [f"trainer.checkpoint_every={EVERY}", "trainer.async_checkpoint=true"],
}


def _excess_seconds(run_dir: Path, mode: str) -> tuple[float, float]:
    """The run's excess over its median step (steps 2..: the first holds the warm-up),
    and the part of it the loop spent on checkpoints."""
    run_recipe("gpt2-tiny", [*BASE, *MODES[mode]], run_dir=run_dir)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r][1:]
    tokens_per_step = records[0]["tokens"] // records[0]["step"]
    steps = [tokens_per_step / r["tokens_per_s"] for r in records]
    median = statistics.median(steps)
    waited = sum(r["checkpoint_wait_s"] for r in records)
    return sum(t - median for t in steps) + waited, waited


def test_async_checkpoints_lose_a_quarter_of_the_time(benchmark, bench_targets, demo_cache,
                                                      tmp_path):
    _excess_seconds(tmp_path / "warmup", "none")  # prepares the demo data once
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    waits: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(ROUNDS):
        for mode in (list(MODES) if i % 2 == 0 else list(MODES)[::-1]):
            total, waited = _excess_seconds(tmp_path / f"{mode}-{i}", mode)
            seconds[mode].append(total)
            waits[mode].append(waited)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    base = statistics.median(seconds["none"])
    lost = {m: (statistics.median(seconds[m]) - base) / TIMED_SAVES for m in ("sync", "async")}
    waited = {m: statistics.median(waits[m]) / TIMED_SAVES for m in ("sync", "async")}
    benchmark.extra_info.update(seconds=seconds, waits=waits)
    print(f"\ngpt2-tiny, {STEPS} steps, a checkpoint every {EVERY}: excess {base:.3f} s "
          f"without checkpoints; lost per checkpoint: sync {lost['sync'] * 1e3:.1f} ms "
          f"(waited {waited['sync'] * 1e3:.1f} ms), async {lost['async'] * 1e3:.1f} ms "
          f"(waited {waited['async'] * 1e3:.1f} ms)")
    bench_targets.add("checkpoint time lost, sync (gpt2-tiny)", lost["sync"] * 1e3, unit=" ms",
                      digits=1)
    bench_targets.add("checkpoint time lost, async (gpt2-tiny)", lost["async"] * 1e3,
                      unit=" ms", digits=1)
    bench_targets.add("checkpoint time lost, async / sync", lost["async"] / lost["sync"],
                      at_most=0.25)
    # What the loop itself waited: on a CPU whose cores train, the writer thread's work
    # comes back as slower steps, so this is the part async removes outright.
    bench_targets.add("checkpoint wait of the loop, async / sync",
                      waited["async"] / waited["sync"])
