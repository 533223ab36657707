"""`tools tokenizer train` reads what `tools pack` reads (gzip/zstd JSONL, Parquet, Arrow,
save_to_disk directories, several paths, directories and globs) through the same
readers: the same texts give a byte-identical tokenizer.json, with the same --field and
--on-bad-line behaviour."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llm_gym.cli.main import main

TEXTS = [f"doc {i}: " + "naïve café 日本 tokens " * (i % 7) + "end" * (i % 3)
         for i in range(200)]
VOCAB = "400"


def _cli(capsys, *args: object) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def _train(capsys, out: Path, *inputs: object, extra: tuple = ()) -> bytes:
    code, output = _cli(capsys, "tools", "tokenizer", "train", *inputs, "--vocab-size", VOCAB,
                        "--out", out, *extra)
    assert code in (0, None), output
    return out.read_bytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("train-formats")
    raw = "".join(json.dumps({"id": i, "body": {"text": t}}) + "\n"
                  for i, t in enumerate(TEXTS)).encode()
    (d / "c.jsonl").write_bytes(raw)
    (d / "c.jsonl.gz").write_bytes(gzip.compress(raw))
    (d / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    table = pa.table({"id": list(range(len(TEXTS))), "body.text": TEXTS})
    pq.write_table(table, d / "c.parquet", row_group_size=70)
    with pa.ipc.new_file(d / "c.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=50)
    half = len(TEXTS) // 2
    (d / "parts").mkdir()
    for name, texts in (("a", TEXTS[:half]), ("b", TEXTS[half:])):
        pq.write_table(pa.table({"body.text": texts}), d / "parts" / f"{name}.parquet")
    return d


def test_parquet_and_zstd_train_the_tokenizer_of_the_same_jsonl(
    capsys, tmp_path: Path, corpus: Path
) -> None:
    field = ("--field", "body.text")
    expected = _train(capsys, tmp_path / "jsonl.json", corpus / "c.jsonl", extra=field)
    for name in ("c.jsonl.zst", "c.parquet", "c.jsonl.gz", "c.arrow"):
        assert _train(capsys, tmp_path / f"{name}.json", corpus / name,
                      extra=field) == expected, name
    # Several inputs, in the order given: a directory, and a glob of the same parts.
    assert _train(capsys, tmp_path / "dir.json", corpus / "parts", extra=field) == expected
    assert _train(capsys, tmp_path / "glob.json", str(corpus / "parts" / "*.parquet"),
                  extra=field) == expected
    # The texts matter: half of them train another tokenizer.
    assert _train(capsys, tmp_path / "half.json", corpus / "parts" / "a.parquet",
                  extra=field) != expected


def test_bad_rows_fail_or_are_skipped_as_in_pack(capsys, tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["good text", None, "more good text"]}),
                   tmp_path / "t.parquet")
    code, output = _cli(capsys, "tools", "tokenizer", "train", tmp_path / "t.parquet",
                        "--vocab-size", VOCAB, "--out", tmp_path / "o.json")
    assert code == 2 and "t.parquet: row 2" in output and "--on-bad-line skip" in output
    assert "Traceback" not in output and not (tmp_path / "o.json").exists()
    code, output = _cli(capsys, "tools", "tokenizer", "train", tmp_path / "t.parquet",
                        "--vocab-size", VOCAB, "--out", tmp_path / "o.json",
                        "--on-bad-line", "skip")
    assert code in (0, None) and "skipped " in output and "t.parquet: row 2" in output
    assert (tmp_path / "o.json").is_file()

