"""Packing in shards: J jobs x several shards, read in order, hold the tokens of one pack
of the same inputs (so the dataset serves the same batches); the manifests, the merge and
every way they can go wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from llm_gym.cli.main import main
from llm_gym.data.pack import pack_files
from llm_gym.data.packed import PackedTokens
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.data.shard_manifest import merge_jobs, read_manifest
from llm_gym.data.shard_pack import job_share, pack_shards
from llm_gym.data.sharded_pack import ShardedTokens, block_rows
from llm_gym.data.sources import expand_inputs
from llm_gym.errors import UserError
from llm_gym_components.tokenizers import ByteLevelTokenizer

SHARD_TOKENS = 3000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shard-inputs")
    rng = np.random.default_rng(3)
    for f in range(5):
        with (d / f"part{f}.jsonl").open("w") as out:
            for i in range(60):
                text = f"file {f} doc {i} " + "lorem ipsum " * int(rng.integers(0, 30))
                out.write(json.dumps({"text": text}) + "\n")
    return d


def _files(d: Path):
    return expand_inputs([d / "part*.jsonl"])


def _pack_jobs(inputs: Path, out: Path, num_jobs: int, tok=None, **options) -> None:
    for job in range(num_jobs):
        pack_shards(_files(inputs), tok or ByteLevelTokenizer(), out,
                    shard_tokens=SHARD_TOKENS, num_jobs=num_jobs, job_index=job,
                    batch_docs=7, **options)


def test_two_jobs_of_shards_hold_the_tokens_of_one_pack(tmp_path: Path, inputs: Path) -> None:
    pack_files(_files(inputs), ByteLevelTokenizer(), tmp_path / "whole")
    _pack_jobs(inputs, tmp_path / "shards", 2)
    merged = merge_jobs(tmp_path / "shards")
    assert len(merged.shards) >= 6 and {s.prefix[:10] for s in merged.shards} == {
        "part-00000", "part-00001"}
    whole, sharded = PackedTokens.open(tmp_path / "whole"), PackedTokens.open(tmp_path / "shards")
    assert (sharded.n_tokens, sharded.n_docs) == (whole.n_tokens, whole.n_docs)
    assert np.array_equal(sharded.tokens[:], whole.tokens)
    assert np.array_equal(sharded.offsets, whole.offsets)
    assert np.array_equal(sharded.document(100), whole.document(100))
    sharded.verify()
    # The dataset's reads (slices and gathers across shard boundaries): the same batches,
    # so training on either gives the same losses.
    for split in ("train", "val"):
        a = PackedMemMapDataset(tmp_path / "whole", 50, split=split, val_fraction=0.2, seed=1)
        b = PackedMemMapDataset(tmp_path / "shards", 50, split=split, val_fraction=0.2, seed=1)
        for _ in range(12):
            assert np.array_equal(a.next_batch(8).numpy(), b.next_batch(8).numpy())
        assert np.array_equal(a.read_block(3).numpy(), b.read_block(3).numpy())
    b.packed.check_tokenizer(ByteLevelTokenizer().fingerprint())
    with pytest.raises(UserError, match="manifest.json: packed with tokenizer fingerprint"):
        b.packed.check_tokenizer("0" * 64)


def test_shards_end_at_the_first_document_that_fills_them(tmp_path: Path, inputs: Path) -> None:
    _pack_jobs(inputs, tmp_path / "s", 1)
    manifest = read_manifest(tmp_path / "s" / "manifest.json")
    for entry in manifest.shards[:-1]:
        shard = PackedTokens.open(tmp_path / "s" / entry.prefix)
        last = int(shard.offsets[-1] - shard.offsets[-2])
        assert shard.n_tokens >= SHARD_TOKENS > shard.n_tokens - last
    assert manifest.shards[-1].n_tokens <= SHARD_TOKENS + 1000
    assert [i["path"] for i in manifest.inputs] == [str(f.path) for f in _files(inputs)]


def test_sharded_tokens_index_like_one_array() -> None:
    parts = [np.arange(0, 5), np.arange(5, 6), np.arange(6, 20)]
    whole, view = np.arange(20), ShardedTokens(parts, np.dtype(np.int64))
    for key in (slice(None), slice(3, 7), slice(4, 5), slice(5, 6), slice(18, 40),
                slice(7, 3), slice(-3, None), slice(1, 19, 4)):
        assert np.array_equal(view[key], whole[key]), key
    idx = np.array([[0, 4, 5, 6, 19], [-1, 3, 5, 12, 2]])
    assert np.array_equal(view[idx], whole[idx]) and view[-1] == 19 and view[5] == 5
    with pytest.raises(IndexError):
        view[np.array([20])]
    # Blocks of 6 tokens every 5 (the dataset's rows): the same from the view as the array.
    strided, gathered = block_rows(whole, 3, 5, 6), block_rows(view, 3, 5, 6)
    blocks = np.array([2, 0, 1, 1])
    assert np.array_equal(gathered[blocks], strided[blocks]) and gathered[blocks].shape == (4, 6)
    assert np.array_equal(gathered[1:], strided[1:]) and gathered[:0].shape == (0, 6)


def test_job_shares_are_contiguous_and_cover_every_input() -> None:
    for n, jobs in ((10, 3), (2, 5), (7, 7), (0, 2)):
        shares = [job_share(n, jobs, j) for j in range(jobs)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:], strict=False))
        assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1
    with pytest.raises(UserError, match="--job-index 3: expected 0..2"):
        job_share(5, 3, 3)


def test_fewer_inputs_than_jobs(tmp_path: Path, inputs: Path) -> None:
    _pack_jobs(inputs, tmp_path / "s", 7)  # 5 inputs: jobs 0 and 3 get none
    empty = read_manifest(tmp_path / "s" / "job-00000-of-00007.json")
    assert empty.shards == () and empty.job_inputs == (0, 0)
    merged = merge_jobs(tmp_path / "s")
    pack_files(_files(inputs), ByteLevelTokenizer(), tmp_path / "whole")
    whole = PackedTokens.open(tmp_path / "whole")
    assert merged.n_tokens == whole.n_tokens
    assert np.array_equal(PackedTokens.open(tmp_path / "s").tokens[:], whole.tokens)


class OtherByteLevel(ByteLevelTokenizer):
    def fingerprint(self) -> str:
        return "f" * 64


def test_merge_and_open_refuse_what_does_not_belong(tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "s"
    pack_shards(_files(inputs), ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS,
                num_jobs=2, job_index=0)
    with pytest.raises(UserError, match=r"1 of 2 jobs have not finished \(no"
                                        r" job-00001-of-00002.json\)"):
        merge_jobs(out)
    with pytest.raises(UserError, match="but no manifest.json: once every job has finished,"
                                        " run `llm_gym tools pack-merge"):
        PackedTokens.open(out)
    with pytest.raises(UserError, match="the manifest of job 0 of 2 only"):
        PackedTokens.open(out / "job-00000-of-00002.json")
    # Jobs started at once on two machines see no manifest of each other: merge checks.
    pack_shards(_files(inputs), OtherByteLevel(), tmp_path / "elsewhere",
                shard_tokens=SHARD_TOKENS, num_jobs=2, job_index=1)
    for made in (tmp_path / "elsewhere").iterdir():
        (out / made.name).write_bytes(made.read_bytes())
    with pytest.raises(UserError, match="job-00001-of-00002.json: tokenizer_fingerprint differs"
                                        " .*shards packed with different tokenizers"):
        merge_jobs(out)
    for made in (tmp_path / "elsewhere").iterdir():  # the user removes the stray job
        (out / made.name).unlink()
    with pytest.raises(UserError, match="job-00000-of-00002.json records another"
                                        " on_bad_line"):
        pack_shards(_files(inputs), ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS,
                    num_jobs=2, job_index=1, on_bad_line="skip")
    pack_shards(_files(inputs), ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS,
                num_jobs=2, job_index=1)
    merge_jobs(out)
    victim = out / "part-00001-00001.bin"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match="part-00001-00001.bin: SHA-256 .* differs"):
        merge_jobs(out)
    victim.unlink()
    with pytest.raises(UserError, match="part-00001-00001.bin: missing: .*manifest.json names"
                                        " shard part-00001-00001"):
        PackedTokens.open(out)


def test_a_failed_job_leaves_the_directory_as_it_was(tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "s"
    _pack_jobs(inputs, out, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "bad").mkdir()
    for f in _files(inputs):
        (tmp_path / "bad" / f.path.name).write_bytes(f.path.read_bytes())
    (tmp_path / "bad" / "part4.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(UserError, match="part4.jsonl:2: invalid JSON"):
        _pack_jobs(tmp_path / "bad", out, 1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(UserError, match="part4.jsonl:2: invalid JSON"):
        _pack_jobs(tmp_path / "bad", tmp_path / "new", 1)
    assert not (tmp_path / "new").exists()  # the folder it made for nothing is gone


def test_a_job_of_another_pack_is_refused_before_it_replaces_a_shard(
        tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "s"
    _pack_jobs(inputs, out, 2)
    merge_jobs(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="holds a sharded pack made otherwise .* another"
                                        " num_jobs"):
        pack_shards(_files(inputs), ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS,
                    num_jobs=3, job_index=1)
    with pytest.raises(UserError, match="another tokenizer_fingerprint"):
        pack_shards(_files(inputs), OtherByteLevel(), out, shard_tokens=SHARD_TOKENS,
                    num_jobs=2, job_index=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _pack_jobs(inputs, out, 2)  # the same pack's jobs run again: the same files
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_job_packed_again_in_fewer_shards_leaves_none_of_its_old_ones(
        tmp_path: Path, inputs: Path) -> None:
    out = tmp_path / "s"
    files = _files(inputs)
    pack_shards(files, ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS // 2)
    many = len(read_manifest(out / "manifest.json").shards)
    pack_shards(files, ByteLevelTokenizer(), out, shard_tokens=SHARD_TOKENS * 2)
    shards = read_manifest(out / "manifest.json").shards
    assert len(shards) < many
    named = {f"{e.prefix}{suffix}" for e in shards for suffix in (".bin", ".idx")}
    assert {p.name for p in out.glob("part-*")} == named


def _cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def test_cli_array_of_jobs_then_merge(tmp_path: Path, inputs: Path, capsys) -> None:
    common = ["tools", "pack", inputs / "part*.jsonl", "--tokenizer", "ByteLevel",
              "--out", tmp_path / "s", "--shard-tokens", SHARD_TOKENS, "--num-jobs", 2]
    code, out = _cli(capsys, *common, "--job-index", 0)
    assert code == 0 and "job 0 of 2: inputs 1..2 of 5" in out and "input 5:" in out, out
    code, out = _cli(capsys, *common, "--job-index", 1)
    assert code == 0 and "job 1 of 2: inputs 3..5 of 5" in out, out
    code, out = _cli(capsys, "tools", "pack-merge", tmp_path / "s")
    assert code == 0 and re.search(r"merged 2 jobs: \d+ shards, 300 documents", out), out
    code, out = _cli(capsys, "tools", "pack-merge", tmp_path / "nowhere")
    assert code == 2 and "not a directory of shards" in out
    code, out = _cli(capsys, *common, "--job-index", 2)
    assert code == 2 and "--job-index 2: expected 0..1" in out, out
    code, out = _cli(capsys, *common[:-2], "--num-jobs", 0)
    assert code == 2 and "--num-jobs" in out, out


def test_the_dataset_component_accepts_a_directory_or_manifest(tmp_path: Path,
                                                               inputs: Path) -> None:
    from llm_gym_components.datasets.packed_tokens import check_pack

    _pack_jobs(inputs, tmp_path / "s", 1)
    trainer = type("T", (), {"seq_len": 64})()
    assert list(check_pack(str(tmp_path / "s"), "train", 0.0, trainer, None)) == []
    assert list(check_pack(str(tmp_path / "s" / "manifest.json"), "train", 0.0, trainer,
                           None)) == []
    (tmp_path / "empty").mkdir()
    (problem,) = check_pack(str(tmp_path / "empty"), "train", 0.0, trainer, None)
    assert "a directory without manifest.json: not a sharded pack" in problem
