"""Peak memory of ``tools pack`` does not grow with the input: 100 MB vs 2 GB of text.

Each input is packed by a fresh process (``pack_rss.py``) with 2 workers and the peak
resident set is read from ``getrusage``: the packing process's own, plus the largest
worker's times the number of workers (the worst case: every worker at its peak at once).
The inputs are English-like text repeated to the size asked for, as zstd JSONL and as
Parquet (row groups of ~1 MB), packed into shards of 50M tokens as a big job would be.
Target: the larger input's peak within 100 MiB of the smaller one's.

``LLM_GYM_BENCH_PACK_MB=100,2000`` (the default) sets the two sizes in MB of text; a
quick run can use e.g. ``100,400``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from test_bench_pack import english_like_texts

from llm_gym_components.tokenizers import train_bpe_tokenizer

WORKERS = 2
MIB = 1 << 20


def _sizes() -> tuple[int, int]:
    small, large = os.environ.get("LLM_GYM_BENCH_PACK_MB", "100,2000").split(",")
    return int(small), int(large)


def _write(d: Path, fmt: str, megabytes: int, base: list[str]) -> Path:
    """``megabytes`` of text: ``base`` repeated, each copy's documents numbered anew."""
    base_bytes = sum(len(t.encode()) for t in base)
    copies = max(1, round(megabytes * 1e6 / base_bytes))
    path = d / f"{megabytes}mb.{fmt}"
    if fmt == "jsonl.zst":
        with path.open("wb") as raw, zstandard.ZstdCompressor().stream_writer(raw) as f:
            for c in range(copies):
                f.write("".join(json.dumps({"id": c, "text": t}) + "\n" for t in base).encode())
    else:
        table = pa.table({"text": base})
        with pq.ParquetWriter(path, table.schema) as w:
            for _ in range(copies):
                w.write_table(table, row_group_size=250)
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack_memory")
    base = english_like_texts(8)
    sample = d / "sample.jsonl"
    sample.write_text("".join(json.dumps({"text": t}) + "\n" for t in base))
    tok = train_bpe_tokenizer(sample, 8192, d / "tokenizer.json")
    return d, base, tok


@pytest.mark.parametrize("fmt", ["jsonl.zst", "parquet"])
def test_pack_peak_memory_is_flat(bench_targets, corpora, fmt: str) -> None:
    d, base, tok = corpora
    peaks = {}
    script = Path(__file__).with_name("pack_rss.py")
    for mb in _sizes():
        src = _write(d, fmt, mb, base)
        run = subprocess.run(
            [sys.executable, str(script), str(src), str(tok), str(d / f"out-{fmt}-{mb}"),
             str(WORKERS), str(50_000_000)],
            check=True, capture_output=True, text=True,
        )
        got = json.loads(run.stdout.strip().splitlines()[-1])
        peaks[mb] = got["parent_rss"] + WORKERS * got["worker_rss"]
        print(f"\n{fmt} {mb} MB of text ({got['bytes'] / 1e6:.0f} MB on disk): {got['tokens']:,}"
              f" tokens in {got['seconds']:.0f}s; peak RSS parent {got['parent_rss'] / MIB:.0f}"
              f" MiB, worker {got['worker_rss'] / MIB:.0f} MiB, total <="
              f" {peaks[mb] / MIB:.0f} MiB")
        src.unlink()
    small, large = _sizes()
    bench_targets.add(f"`tools pack` {fmt} peak RSS, {small} MB of text", peaks[small] / MIB,
                      unit=" MiB", digits=0)
    bench_targets.add(f"`tools pack` {fmt} peak RSS, {large} MB minus {small} MB",
                      (peaks[large] - peaks[small]) / MIB, at_most=100, unit=" MiB", digits=0)
