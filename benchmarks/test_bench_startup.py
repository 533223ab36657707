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


def test_help_startup(benchmark):
    baseline = _median_seconds([sys.executable, "-c", "pass"])
    help_cmd = [sys.executable, "-m", "llm_gym", "--help"]
    benchmark.pedantic(lambda: subprocess.run(help_cmd, check=True, capture_output=True),
                       rounds=10, iterations=1)
    ours = _median_seconds(help_cmd)
    print(f"\nstartup: python -c pass {baseline * 1000:.0f} ms | llm_gym --help "
          f"{ours * 1000:.0f} ms | ratio {ours / baseline:.1f}x | "
          f"llm_gym's own cost {(ours - baseline) * 1000:.0f} ms (target: total < 300 ms)")
