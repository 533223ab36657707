"""MemMapDataset: random access by index, fields, lazy and stale index handling."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
from pathlib import Path

import pytest

from llm_gym.data.jsonl_dataset import MemMapDataset
from llm_gym.data.line_index import build_line_index
from llm_gym.errors import UserError


def write_jsonl(path: Path, records: list, *, blank_every: int = 0) -> Path:
    lines = []
    for i, record in enumerate(records):
        if blank_every and i % blank_every == 0:
            lines.append("")
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def docs() -> list[dict]:
    rng = random.Random(3)
    return [
        {"text": "".join(rng.choice("abcé😀 ") for _ in range(rng.randint(1, 30))), "id": i}
        for i in range(500)
    ]


def test_lazy_build_and_random_access(tmp_path: Path, docs: list[dict]) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", docs, blank_every=7)
    assert not (tmp_path / "docs.jsonl.idx").exists()
    ds = MemMapDataset(path)
    assert (tmp_path / "docs.jsonl.idx").exists()
    assert len(ds) == len(docs)
    for i in random.Random(0).sample(range(len(docs)), 100):
        assert ds[i] == ds.text(i) == docs[i]["text"]
        assert ds.record(i) == docs[i]
    assert ds[-1] == docs[-1]["text"]
    with pytest.raises(IndexError):
        ds[len(docs)]


def test_existing_index_is_reused(tmp_path: Path, docs: list[dict]) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    index_path = build_line_index(path).path
    built_at = index_path.stat().st_mtime_ns
    os.utime(index_path, ns=(built_at - 10**9, built_at - 10**9))
    assert MemMapDataset(path)[3] == docs[3]["text"]
    assert index_path.stat().st_mtime_ns == built_at - 10**9


def test_tokenizer(tmp_path: Path, docs: list[dict]) -> None:
    class Chars:
        def encode(self, text: str) -> list[int]:
            return [ord(c) for c in text]

    class Encoding:  # what a Hugging Face `tokenizers.Tokenizer.encode` returns
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    class HuggingFaceLike:
        def encode(self, text: str) -> Encoding:
            return Encoding([len(text)])

    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    assert MemMapDataset(path, Chars())[5] == [ord(c) for c in docs[5]["text"]]
    assert MemMapDataset(path, HuggingFaceLike())[5] == [len(docs[5]["text"])]


def test_dotted_field_and_literal_dotted_key(tmp_path: Path) -> None:
    records = [{"meta": {"body": "nested"}, "meta.body": "literal"}, {"meta": {"body": "b"}}]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    ds = MemMapDataset(path, field="meta.body")
    assert [ds[0], ds[1]] == ["literal", "b"]


def test_missing_field_names_line_and_field(tmp_path: Path) -> None:
    records = [{"text": "a"}, {"body": "b"}, {"meta": 3}, {"text": 5}]
    path = write_jsonl(tmp_path / "docs.jsonl", records, blank_every=2)  # lines 2, 3, 5, 6
    ds = MemMapDataset(path)
    with pytest.raises(UserError, match=r"docs\.jsonl line 3: no field 'text' \(keys: 'body'\)"):
        ds[1]
    with pytest.raises(UserError, match=r"docs\.jsonl line 6: field 'text' is int, expected"):
        ds[3]
    nested = MemMapDataset(path, field="meta.body")
    with pytest.raises(UserError, match=r"line 5: no field 'meta.body': meta is a JSON int"):
        nested[2]
    with pytest.raises(UserError, match=r"line 2: no field 'meta.body' \(missing 'meta'"):
        nested[0]


def test_bad_json_and_utf8_found_at_read_time(tmp_path: Path) -> None:
    # Past the first 64 KiB, which an unvalidated build checks for UTF-8.
    padding = b'{"text": "a"}\n' * 5000
    path = tmp_path / "docs.jsonl"
    path.write_bytes(padding + b'{"text": oops}\n{"text": "\xff"}\n')
    ds = MemMapDataset(path)
    assert ds[0] == "a"
    with pytest.raises(UserError, match=r"docs\.jsonl line 5001: invalid JSON"):
        ds[5000]
    offset = len(padding) + 25
    with pytest.raises(UserError, match=rf"docs\.jsonl line 5002: invalid UTF-8 .* {offset}$"):
        ds[5001]


def test_stale_index_is_rebuilt(tmp_path: Path, docs: list[dict], caplog) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", docs[:10])
    assert len(MemMapDataset(path)) == 10
    write_jsonl(path, docs[:12])
    with caplog.at_level(logging.WARNING, logger="llm_gym.data.jsonl_dataset"):
        ds = MemMapDataset(path)
    assert len(ds) == 12 and ds[11] == docs[11]["text"]
    assert "rebuilding the index" in caplog.text and "changed size" in caplog.text
    assert MemMapDataset(path, on_stale="refuse")[11] == docs[11]["text"]  # fresh again


def test_stale_rebuild_keeps_validate_and_skip(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "a"}\nbroken\n')
    build_line_index(path, validate=True, on_bad_line="skip")
    path.write_bytes(b'{"text": "a"}\nbroken\n{"text": "c"}\n')
    ds = MemMapDataset(path)
    assert [ds[i] for i in range(len(ds))] == ["a", "c"]


def test_stale_index_refused_says_why(tmp_path: Path, docs: list[dict]) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", docs[:10])
    index_path = build_line_index(path).path
    before = index_path.read_bytes()
    st = path.stat()
    path.write_text(path.read_text().replace('"id": 3', '"id": 4'))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(UserError, match=r"docs\.jsonl\.idx: the index is stale: .*differ"):
        MemMapDataset(path, on_stale="refuse")
    assert index_path.read_bytes() == before


def test_same_size_edit_past_the_fingerprint_with_mtime_kept_is_stale(tmp_path: Path) -> None:
    # What `cp -p` or `rsync -t` of an edited file does: same size, same mtime, and the
    # edit beyond the first and last 64 KiB that the cheap fingerprint covers.
    texts = [f"document {i:05d} " + "x" * 40 for i in range(6000)]  # ~360 kB
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    build_line_index(path)
    st = path.stat()
    edited = list(texts)
    edited[3000], edited[3001] = edited[3000][:-10], edited[3001] + "y" * 10  # boundary moves
    write_jsonl(path, [{"text": t} for t in edited])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(UserError, match=r"stale: .*content differs .*llm_gym tools index"):
        MemMapDataset(path, on_stale="refuse")
    ds = MemMapDataset(path)  # rebuilt: the edited text, every line whole
    assert [ds[i] for i in (2999, 3000, 3001, 3002)] == edited[2999:3003]


def test_an_index_of_format_1_is_rebuilt_as_it_was_built(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "a"}\nbroken\n{"text": "c"}\n')
    index_path = build_line_index(path, validate=True, on_bad_line="skip").path
    v2 = index_path.read_bytes()
    # Version 1: the same first 72 header bytes, no CRC, offsets right after.
    index_path.write_bytes(v2[:8] + (1).to_bytes(4, "little") + v2[12:72] + v2[80:])
    with pytest.raises(UserError, match=r"version 1 .*--validate --on-bad-line skip"):
        MemMapDataset(path, on_stale="refuse")
    ds = MemMapDataset(path)
    assert [ds[i] for i in range(len(ds))] == ["a", "c"]
    assert index_path.read_bytes() == v2


def test_a_lone_surrogate_is_named_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "fine \\ud83d\\ude00"}\n{"text": "lone \\udc00"}\n')
    ds = MemMapDataset(path)
    assert ds[0] == "fine \U0001f600"  # a pair is one character
    with pytest.raises(UserError, match=r"docs\.jsonl line 2: invalid Unicode: .*U\+DC00"):
        ds[1]


def test_an_index_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}])
    os.mkfifo(tmp_path / "docs.jsonl.idx")
    previous = signal.signal(signal.SIGALRM, _blocked)
    signal.alarm(20)
    try:
        with pytest.raises(UserError, match=r"docs\.jsonl\.idx: is a FIFO"):
            MemMapDataset(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _blocked(signum, frame):  # noqa: ANN001
    raise TimeoutError("opening the index blocked")


def test_corrupt_index_rebuilt_or_refused(tmp_path: Path, docs: list[dict]) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", docs[:10])
    index_path = build_line_index(path).path
    index_path.write_bytes(index_path.read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated"):
        MemMapDataset(path, on_stale="refuse")
    assert len(MemMapDataset(path)) == 10
    index_path.write_bytes(b"somebody else's file")
    with pytest.raises(UserError, match="not an llm_gym line index"):
        MemMapDataset(path)
    assert index_path.read_bytes() == b"somebody else's file"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.jsonl: no such file"):
        MemMapDataset(tmp_path / "nope.jsonl")


def test_pickles_for_dataloader_workers(tmp_path: Path, docs: list[dict]) -> None:
    ds = MemMapDataset(write_jsonl(tmp_path / "docs.jsonl", docs))
    assert ds[1] == docs[1]["text"]  # maps the data before pickling
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == len(docs) and clone[-2] == docs[-2]["text"]
    ds.close()
    assert clone[0] == docs[0]["text"]


def _rank_main(rank: int, path: Path, results: Path) -> None:
    import time

    import torch.distributed as dist

    import llm_gym.data.jsonl_dataset as module

    def recording_build(*args, **kwargs):
        with (results / "builds").open("a") as f:
            f.write(f"{rank}\n")
        time.sleep(0.5)  # a rank that did not wait would find no index and build too
        return build_line_index(*args, **kwargs)

    module.build_line_index = recording_build
    dist.init_process_group(
        "gloo", init_method=f"file://{results / 'rendezvous'}", rank=rank, world_size=2
    )
    try:
        ds = MemMapDataset(path)
        (results / f"rank{rank}").write_text(f"{len(ds)} {ds[len(ds) - 1]}")
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_rank_zero_builds_while_others_wait(tmp_path: Path, docs: list[dict]) -> None:
    import torch.multiprocessing as mp

    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    # fork: the ranks inherit the imported torch instead of paying seconds to import it
    mp.start_processes(_rank_main, args=(path, tmp_path), nprocs=2, start_method="fork")
    assert (tmp_path / "builds").read_text() == "0\n"
    expected = f"{len(docs)} {docs[-1]['text']}"
    assert (tmp_path / "rank0").read_text() == (tmp_path / "rank1").read_text() == expected
