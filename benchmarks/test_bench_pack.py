"""tools pack's throughput against bare Hugging Face ``encode_batch`` over the same texts,
reading JSONL, Parquet and zstd-compressed JSONL.

Both sides use the same byte-level BPE (trained here on generated English-like text), the
same batches and the same number of processes, started the same way (``spawn``, one
tokenizer copy per process, TOKENIZERS_PARALLELISM=false inside workers); with one worker
both run in this process. Both include their own process start-up. Rounds alternate
between the two and the fastest of each is compared. The ratio
``pack / bare`` is what pack's reading, JSON parsing, id conversion, transfer, hashing and
writing cost on top of tokenization (for Parquet: decoding the column instead of JSON; for
zstd: decompressing too); the target is >= 0.9 for each format.

Run: pytest benchmarks --benchmark-enable -s
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from bare_encode import bare_encode_batch

from llm_gym.data.pack import pack_files
from llm_gym.data.sources import expand_inputs
from llm_gym_components.tokenizers import HFJsonTokenizer, train_bpe_tokenizer

CORPUS_MB = 6
BATCH_DOCS = 256
ROUNDS = 5
WORDS = (
    "the of and to in a is that for it as was with be by on not he I this are or his from at"
    " which but have an they you were her she there one all we their has been would more will"
    " time if two may its no other when some what could into only new than then people these"
    " over such first made after also did many before must through years where much your way"
    " well down should because each just those how too little state good very make world still"
    " own see men work long get here between both life being under never day same another know"
    " while last might us great old year off come since against go came right used take three"
    " language model training data token memory process worker file stream document corpus"
    " naïve café résumé Zürich Straße"
).split()


def english_like_texts(megabytes: float, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    # Zipf-like word frequencies, as in real prose: a few words dominate.
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    texts, size = [], 0
    while size < megabytes * 1e6:
        sentences = []
        for _ in range(int(rng.integers(2, 40))):
            words = [WORDS[i] for i in rng.choice(len(WORDS), int(rng.integers(4, 25)), p=p)]
            words[0] = words[0].capitalize()
            if rng.random() < 0.2:
                words.insert(int(rng.integers(1, len(words))), str(int(rng.integers(0, 3000))))
            sentences.append(" ".join(words) + rng.choice([".", ".", ".", "?", "!", ";"]))
        text = " ".join(sentences).replace("; ", ";\n\n", 1)
        texts.append(text)
        size += len(text.encode("utf-8"))
    return texts


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_pack")
    texts = english_like_texts(CORPUS_MB)
    src = d / "corpus.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    (d / "corpus.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(src.read_bytes()))
    # Row groups of ~1 MB, as a corpus writer's defaults give for text of this size.
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}),
                   d / "corpus.parquet", row_group_size=250)
    started = time.perf_counter()
    tok = HFJsonTokenizer(train_bpe_tokenizer(src, 8192, d / "tokenizer.json"))
    print(
        f"\ncorpus {src.stat().st_size / 1e6:.1f} MB, {len(texts)} docs; "
        f"BPE vocab 8192 trained in {time.perf_counter() - started:.1f}s"
    )
    return d, src, texts, tok


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "jsonl.zst"])
@pytest.mark.parametrize("workers", sorted({1, min(4, os.cpu_count() or 1)}))
def test_pack_vs_bare_encode_batch(benchmark, bench_targets, setup, workers: int,
                                   fmt: str) -> None:
    d, _, texts, tok = setup
    files = expand_inputs([d / f"corpus.{fmt}"])
    assert files[0].format == fmt
    bare_times, pack_times = [], []
    n_ids = 0
    summary = None
    for i in range(ROUNDS):  # interleaved, each side first in turn: drift hits both alike
        for side in ("bare", "pack") if i % 2 == 0 else ("pack", "bare"):
            t = time.perf_counter()
            if side == "bare":
                n_ids = bare_encode_batch(tok, texts, workers, BATCH_DOCS)
                bare_times.append(time.perf_counter() - t)
            else:
                summary = pack_files(files, tok, d / f"out{workers}", workers=workers,
                                     batch_docs=BATCH_DOCS)
                pack_times.append(time.perf_counter() - t)
    assert summary.n_tokens == n_ids + len(texts)  # the same work: ids plus one eod per doc
    benchmark.extra_info.update(workers=workers, tokens=summary.n_tokens, format=fmt)
    benchmark.pedantic(
        pack_files, args=(files, tok, d / f"out{workers}"),
        kwargs=dict(workers=workers, batch_docs=BATCH_DOCS), rounds=1, iterations=1,
    )  # fmt: skip
    # The fastest round of each: other load on the machine only ever adds time.
    bare, pack = min(bare_times), min(pack_times)
    ratio = bare / pack
    print(
        f"\n{fmt}, workers={workers}: bare encode_batch {n_ids / bare / 1e6:.2f} M tok/s"
        f" ({bare:.2f}s), pack {summary.n_tokens / pack / 1e6:.2f} M tok/s ({pack:.2f}s),"
        f" ratio {ratio:.3f} (target >= 0.9{'' if ratio >= 0.9 else ', BELOW TARGET'})"
    )
    benchmark.extra_info["ratio_vs_bare_encode_batch"] = ratio
    bench_targets.add(f"`tools pack` {fmt} / bare encode_batch, {workers} worker(s)", ratio,
                      at_least=0.9)
