"""Start-up: `llm_gym --help` beside `python -c pass`, measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def _median_seconds(cmd: list[str], repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_help_startup(benchmark, bench_targets):
    baseline = _median_seconds([sys.executable, "-c", "pass"])
    help_cmd = [sys.executable, "-m", "llm_gym", "--help"]
    benchmark.pedantic(lambda: subprocess.run(help_cmd, check=True, capture_output=True),
                       rounds=10, iterations=1)
    ours = _median_seconds(help_cmd)
    print(f"\nstartup: python -c pass {baseline * 1000:.0f} ms | llm_gym --help "
          f"{ours * 1000:.0f} ms | ratio {ours / baseline:.1f}x | "
          f"llm_gym's own cost {(ours - baseline) * 1000:.0f} ms (target: total < 300 ms)")
    bench_targets.add("`llm_gym --help` start-up", 1000 * ours, at_most=300, unit=" ms", digits=0)


def test_time_to_first_step(benchmark, bench_targets, tmp_path):
    """From `llm_gym recipe run` to the first training step, data already prepared."""
    import os
    from pathlib import Path

    env = {**os.environ, "LLM_GYM_DEMO_CACHE": str(tmp_path / "demo")}
    args = ["trainer.max_steps=1", "trainer.eval_every=null"]

    def first_step(run_dir: Path) -> float:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "llm_gym", "recipe", "run", "gpt2-debug",
                                 "--run-dir", str(run_dir), *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert proc.poll() in (None, 0)
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        proc.wait()
        return seconds

    first_step(tmp_path / "prepare")  # the first run prepares the demo data
    times = [first_step(tmp_path / f"run{i}") for i in range(3)]
    benchmark.pedantic(first_step, args=(tmp_path / "timed",), rounds=1, iterations=1)
    print(f"\ntime to first step (gpt2-debug, data cached): {statistics.median(times):.2f} s "
          f"(python -c pass: {_median_seconds([sys.executable, '-c', 'pass']) * 1000:.0f} ms)")
    bench_targets.add("time from `recipe run` to the first step (gpt2-debug, data cached)",
                      statistics.median(times), unit=" s", digits=2)
