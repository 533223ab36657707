"""A Mixture of two packs against one pack: block reads per second through next_batch.

The two packs (and the single one, which is the mixture's first source) are read once
before timing, so reads come from the page cache. One pack and the mixture are timed
side by side, alternating which goes first, in CPU time of this process (on a shared
machine wall time would mostly measure the neighbours); the figure is the median of the
rounds' ratios. Shapes: GPT-2 124M's micro-batch (16 blocks of 1024 + 1 tokens) and a
larger read (64 blocks of 2048 + 1). Target: the mixture feeds >= 0.95 as many blocks.

Run: pytest benchmarks/test_bench_mixture.py --benchmark-enable -s
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from llm_gym.data.mixture import MixtureDataset
from llm_gym.data.packed import PackedWriter
from llm_gym.data.packed_dataset import PackedMemMapDataset

N_TOKENS = 32 << 20  # 64 MiB of uint16 tokens per pack
ROUNDS = 8


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_mixture")
    rng = np.random.default_rng(0)
    made = []
    for name in ("web", "code"):
        prefix = root / name
        with PackedWriter(prefix, vocab_size=50257, eod_id=50256, fingerprint="0" * 64) as w:
            for _ in range(4):
                tokens = rng.integers(0, 50257, N_TOKENS // 4, dtype=np.uint16)
                w.add_documents(tokens, np.full(len(tokens) // 512, 512))
        made.append(prefix)
    return made


def _blocks_per_cpu_second(dataset, batch_size: int, batches: int) -> float:
    started = time.process_time()
    for _ in range(batches):
        dataset.next_batch(batch_size)
    return batch_size * batches / (time.process_time() - started)


@pytest.mark.parametrize(("seq_len", "batch_size"), [(1024, 16), (2048, 64)])
def test_mixture_feeds_as_fast_as_one_pack(benchmark, bench_targets, prefixes, seq_len,
                                           batch_size) -> None:
    one = PackedMemMapDataset(prefixes[0], seq_len)
    sources = [PackedMemMapDataset(p, seq_len) for p in prefixes]
    mix = MixtureDataset(sources, [3, 1])
    for source in sources:
        assert int(source.packed.tokens.sum(dtype=np.uint64)) > 0  # fault every page in
    batches = max(50, (1 << 25) // (batch_size * seq_len))  # 32M tokens per timing
    one.next_batch(batch_size)
    mix.next_batch(batch_size)
    ratios, rates = [], {"one": [], "mix": []}
    for r in range(ROUNDS):
        order = [("one", one), ("mix", mix)] if r % 2 == 0 else [("mix", mix), ("one", one)]
        got = {name: _blocks_per_cpu_second(ds, batch_size, batches) for name, ds in order}
        for name, rate in got.items():
            rates[name].append(rate)
        ratios.append(got["mix"] / got["one"])
    ratio = statistics.median(ratios)
    one_rate, mix_rate = statistics.median(rates["one"]), statistics.median(rates["mix"])
    print(f"\nnext_batch({batch_size}) of {seq_len + 1}-token blocks: one pack "
          f"{one_rate / 1e3:.0f}k blocks/s, a 3:1 mixture of two {mix_rate / 1e3:.0f}k "
          f"blocks/s (CPU time); mixture / one = {ratio:.3f} (median of {ROUNDS} rounds: "
          f"{', '.join(f'{x:.2f}' for x in ratios)}); the mixture's cost over one pack: "
          f"{(1 / mix_rate - 1 / one_rate) * batch_size * 1e6:.1f} us per batch")
    benchmark.extra_info.update(ratio=ratio, one_blocks_per_s=one_rate,
                                mixture_blocks_per_s=mix_rate)
    bench_targets.add(f"mixture / one pack, next_batch({batch_size}) x {seq_len + 1} tokens",
                      ratio, at_least=0.95)
    benchmark.pedantic(mix.next_batch, args=(batch_size,), rounds=50, iterations=1)
