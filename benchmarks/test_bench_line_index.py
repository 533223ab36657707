"""How fast the JSONL line index builds, next to what the disk allows and what older tools did.

    pytest benchmarks/test_bench_line_index.py --benchmark-enable -s

On one generated file (LLM_GYM_BENCH_INDEX_MB, default 256 MB of ~1 KB lines, page
cache warm) it times: reading the file raw, ``build_line_index``, and a per-line Python
reference that pickles a list of (offset, length) tuples. It then measures how much the
peak RSS of a fresh process grows while each indexer runs, and prints a summary.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_gym.data.line_index import DEFAULT_CHUNK_SIZE, build_line_index

SIZE_MB = int(os.environ.get("LLM_GYM_BENCH_INDEX_MB", "256"))
ROUNDS = 3
BEST_SECONDS: dict[str, float] = {}  # filled by the timing tests, read by the summary
BEST_CPU_SECONDS: dict[str, float] = {}  # user + system: less swayed by a busy machine
PEAK_RSS_GROWTH: dict[str, int] = {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(2000)]
    pool = []
    for i in range(997):  # a prime, so the repetition does not line up with chunks
        text = " ".join(rng.choices(words, k=rng.randint(120, 190)))
        pool.append(json.dumps({"id": i, "text": text}).encode() + b"\n")
    path = tmp_path_factory.mktemp("bench") / "corpus.jsonl"
    target = SIZE_MB * 1_000_000
    block = b"".join(rng.choices(pool, k=4096))
    with path.open("wb") as f:
        written = 0
        while written < target:
            written += f.write(
                block[: target - written] if written + len(block) > target else block
            )
        f.write(b"\n")  # the cut above may end mid-line; finish it
    _read_raw(path)  # warm the page cache: we measure the indexer, not the disk
    return path


def _read_raw(path: Path) -> None:
    buf = bytearray(DEFAULT_CHUNK_SIZE)  # the same reads the indexer makes
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def python_reference(source: Path, out: Path) -> None:
    """The per-line way: iterate lines, collect (offset, length) tuples, pickle the list."""
    spans, offset = [], 0
    with open(source, "rb") as f:
        for line in f:
            if line.strip():
                spans.append((offset, len(line)))
            offset += len(line)
    with open(out, "wb") as f:
        pickle.dump(spans, f, protocol=pickle.HIGHEST_PROTOCOL)


def _bench(benchmark, name: str, fn, *args) -> None:
    def timed() -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        fn(*args)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        BEST_SECONDS[name] = min(seconds, BEST_SECONDS.get(name, float("inf")))
        BEST_CPU_SECONDS[name] = min(cpu, BEST_CPU_SECONDS.get(name, float("inf")))

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=0)


def test_raw_read(benchmark, corpus: Path) -> None:
    _bench(benchmark, "raw read", _read_raw, corpus)


def test_build_line_index(benchmark, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus.jsonl.idx"
    _bench(benchmark, "build_line_index", build_line_index, corpus, out)
    assert out.stat().st_size > 0


def test_python_reference(benchmark, corpus: Path, tmp_path: Path) -> None:
    _bench(benchmark, "python per-line + pickle", python_reference, corpus, tmp_path / "ref.pkl")


_RSS_PROBE = """
import sys
from pathlib import Path
sys.path.insert(0, {bench_dir!r})
from llm_gym.data.line_index import build_line_index
from test_bench_line_index import python_reference

def status(key):
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024

before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark, which the imports have raised
{call}
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "name, call",
    [
        ("build_line_index", "build_line_index(Path({src!r}), Path({out!r}))"),
        ("python per-line + pickle", "python_reference(Path({src!r}), Path({out!r}))"),
    ],
)
def test_peak_rss_growth(corpus: Path, tmp_path: Path, name: str, call: str) -> None:
    """In a fresh process, so nothing else this session did counts."""
    call = call.format(src=str(corpus), out=str(tmp_path / "out"))
    code = _RSS_PROBE.format(bench_dir=str(Path(__file__).parent), call=call)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    PEAK_RSS_GROWTH[name] = int(result.stdout.split()[-1])
    if name == "build_line_index":  # bounded by the chunk buffers, not by the file
        assert PEAK_RSS_GROWTH[name] < 4 * DEFAULT_CHUNK_SIZE + (16 << 20)


def test_summary(corpus: Path, capsys: pytest.CaptureFixture[str], bench_targets) -> None:
    if not BEST_SECONDS:
        pytest.skip("no timings ran")
    size = corpus.stat().st_size
    rate = {name: size / seconds / 1e9 for name, seconds in BEST_SECONDS.items()}
    lines = [
        f"line index benchmark: {size / 1e6:.0f} MB, ~1 KB lines, warm page cache, "
        f"best of {ROUNDS}; GB/s of wall time (of CPU time)"
    ]
    for name, gbps in rate.items():
        cpu = size / max(BEST_CPU_SECONDS[name], 1e-9) / 1e9
        rss = PEAK_RSS_GROWTH.get(name)
        extra = f"   peak RSS +{rss / 2**20:.1f} MiB" if rss is not None else ""
        lines.append(f"  {name:<26} {gbps:6.2f} GB/s ({cpu:5.2f}){extra}")
    ours = rate.get("build_line_index")
    if ours and "raw read" in rate:
        lines.append(f"  ours / raw read            {ours / rate['raw read']:6.2f}x")
    if ours and "python per-line + pickle" in rate:
        lines.append(
            f"  ours / python reference    {ours / rate['python per-line + pickle']:6.2f}x"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    if ours:
        bench_targets.add("line index build, GB/s (warm cache)", ours, at_least=2.0, digits=2)
    if "build_line_index" in PEAK_RSS_GROWTH:
        bench_targets.add("line index peak RSS growth, MiB",
                          PEAK_RSS_GROWTH["build_line_index"] / 2**20,
                          at_most=(4 * DEFAULT_CHUNK_SIZE + (16 << 20)) / 2**20, digits=1)
