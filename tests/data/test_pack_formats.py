"""tools pack reads gzip/zstd JSONL, Parquet, Arrow and datasets' save_to_disk directories:
the same texts give the same bytes as from one JSONL file, inputs expand in a fixed order,
and every damaged or unsuitable input is a UserError naming the file and where."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llm_gym.cli.main import main
from llm_gym.data.pack import pack_files
from llm_gym.data.packed import pack_paths
from llm_gym.data.sources import expand_inputs
from llm_gym.errors import UserError
from llm_gym_components.tokenizers import ByteLevelTokenizer

TEXTS = [f"doc {i}: " + "naïve café 日本 " * (i % 5) + "end" * (i % 3) for i in range(300)]
TEXTS[7] = ""  # an empty document is a document (its eod alone)


def write_jsonl(path: Path, texts: list[str | None]) -> bytes:
    raw = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    path.write_bytes(raw)
    return raw


def pack_bytes(tmp_path: Path, inputs: list, fmt: str = "auto", **options) -> bytes:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    pack_files(expand_inputs(inputs, fmt), ByteLevelTokenizer(), out, batch_docs=32, **options)
    return b"".join(p.read_bytes() for p in pack_paths(out))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("formats")
    raw = write_jsonl(d / "c.jsonl", TEXTS)
    (d / "c.jsonl.gz").write_bytes(gzip.compress(raw))
    # Two frames back to back, as `cat a.zst b.zst` makes: both are read.
    half = raw.index(b"\n", len(raw) // 2) + 1
    zc = zstandard.ZstdCompressor(write_checksum=True)
    (d / "c.jsonl.zst").write_bytes(zc.compress(raw[:half]) + zc.compress(raw[half:]))
    table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})
    pq.write_table(table, d / "c.parquet", row_group_size=70)
    with pa.ipc.new_file(d / "c.arrow", table.schema) as w:  # the random-access format
        w.write_table(table, max_chunksize=50)
    return d


def test_every_format_packs_to_the_bytes_of_jsonl(tmp_path: Path, corpus: Path) -> None:
    expected = pack_bytes(tmp_path, [corpus / "c.jsonl"])
    for name in ("c.jsonl.gz", "c.jsonl.zst", "c.parquet", "c.arrow"):
        assert pack_bytes(tmp_path, [corpus / name]) == expected, name


@pytest.mark.parametrize("kind", ["large_string", "string_view", "dictionary", "binary_view"])
def test_every_text_column_type_packs_to_the_bytes_of_jsonl(tmp_path: Path, corpus: Path,
                                                           kind: str) -> None:
    column = pa.array(TEXTS)
    column = (column.dictionary_encode() if kind == "dictionary"
              else column.cast(getattr(pa, kind)()))
    pq.write_table(pa.table({"text": column}), tmp_path / "t.parquet", row_group_size=70)
    _write_arrow(tmp_path / "t.arrow", pa.table({"text": column}))
    expected = pack_bytes(tmp_path, [corpus / "c.jsonl"])
    assert pack_bytes(tmp_path, [tmp_path / "t.parquet"]) == expected
    assert pack_bytes(tmp_path, [tmp_path / "t.arrow"]) == expected


def test_a_datasets_save_to_disk_directory_packs_to_the_bytes_of_jsonl(
        tmp_path: Path, corpus: Path) -> None:
    datasets = pytest.importorskip("datasets")  # in the test extra: never skipped in CI
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"text": TEXTS, "id": list(range(len(TEXTS)))})
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    files = expand_inputs([tmp_path / "hf"])
    assert [f.path.name for f in files] == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    assert pack_bytes(tmp_path, [tmp_path / "hf"], "hf-disk") == pack_bytes(
        tmp_path, [corpus / "c.jsonl"])
    with pytest.raises(UserError, match="DatasetDict of splits \\(train\\)"):
        datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
        expand_inputs([tmp_path / "dd"])


@pytest.mark.dist
def test_parquet_with_two_workers_matches_one(tmp_path: Path, corpus: Path) -> None:
    assert pack_bytes(tmp_path, [corpus / "c.parquet"], workers=2) == pack_bytes(
        tmp_path, [corpus / "c.parquet"])


def test_inputs_expand_in_argument_order_each_sorted(tmp_path: Path) -> None:
    for name in ("b/2.jsonl", "b/10.parquet", "b/sub/1.jsonl.gz", "b/.hidden.jsonl",
                 "b/notes.txt", "a.jsonl", "z1.jsonl", "z0.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    got = expand_inputs([tmp_path / "z*.jsonl", tmp_path / "b", tmp_path / "a.jsonl"])
    names = [(str(f.path.relative_to(tmp_path)), f.format) for f in got]
    assert names == [("z0.jsonl", "jsonl"), ("z1.jsonl", "jsonl"), ("b/10.parquet", "parquet"),
                     ("b/2.jsonl", "jsonl"), ("b/sub/1.jsonl.gz", "jsonl.gz"),
                     ("a.jsonl", "jsonl")]
    assert [f.format for f in expand_inputs([tmp_path / "b/notes.txt"])] == ["jsonl"]
    assert [f.path.name for f in expand_inputs([tmp_path / "b"], "parquet")] == ["10.parquet"]
    # A recursive glob matches the directory and all below it: each file once.
    assert expand_inputs([f"{tmp_path}/b/**"]) == expand_inputs([tmp_path / "b"])


def _save_to_disk_layout(folder: Path, listed: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n}
                                                                   for n in listed]}))
    for name in listed:
        (folder / name).write_bytes(b"")


def test_a_dataset_inside_a_searched_directory_keeps_its_own_order(tmp_path: Path) -> None:
    _save_to_disk_layout(tmp_path / "d/ds", ["data-1.arrow", "data-0.arrow"])
    (tmp_path / "d/a.jsonl").write_text("")
    (tmp_path / "d/z.jsonl").write_text("")
    got = [str(f.path.relative_to(tmp_path)) for f in expand_inputs([tmp_path / "d"])]
    assert got == ["d/a.jsonl", "d/ds/data-1.arrow", "d/ds/data-0.arrow", "d/z.jsonl"]
    (tmp_path / "d/splits").mkdir()
    (tmp_path / "d/splits/dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    _save_to_disk_layout(tmp_path / "d/splits/train", ["data-0.arrow"])
    _save_to_disk_layout(tmp_path / "d/splits/test", ["data-0.arrow"])
    with pytest.raises(UserError, match="splits: a DatasetDict of splits \\(test, train\\)"):
        expand_inputs([tmp_path / "d"])


def test_an_unreadable_folder_is_an_error_not_skipped(tmp_path: Path, monkeypatch) -> None:
    import os

    (tmp_path / "a.jsonl").write_text("")
    real_walk = os.walk

    def walk(top, onerror=None, followlinks=False):  # as os.walk does when denied entry
        yield from real_walk(top, onerror=onerror, followlinks=followlinks)
        if onerror is not None:
            onerror(PermissionError(13, "Permission denied", str(tmp_path / "locked")))

    monkeypatch.setattr("llm_gym.data.sources.inputs.os.walk", walk)
    with pytest.raises(UserError, match="locked: cannot be searched for input files"
                                        " \\(Permission denied\\)"):
        expand_inputs([tmp_path])


@pytest.mark.parametrize("args, message", [
    (["nothing-*.jsonl"], "the pattern matches no file"),
    (["b"], "is a directory with no data file in it"),
    (["a.jsonl", "./a.jsonl"], "named twice among the inputs"),
    (["missing.jsonl"], "no such file"),
    (["a.jsonl", "--format=hf-disk"], "names a save_to_disk directory, not a file"),
])
def test_bad_input_lists(tmp_path: Path, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    fmt = next((a.split("=")[1] for a in args if a.startswith("--format=")), "auto")
    with pytest.raises(UserError, match=message):
        expand_inputs([a for a in args if not a.startswith("--")], fmt)


def test_a_hard_link_is_the_same_file_named_twice(tmp_path: Path) -> None:
    import os

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    os.link(tmp_path / "a.jsonl", tmp_path / "h.jsonl")
    with pytest.raises(UserError, match="h.jsonl: named twice among the inputs"):
        expand_inputs([tmp_path / "a.jsonl", tmp_path / "h.jsonl"])


def test_errors_of_the_file_system_name_the_path(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    with monkeypatch.context() as patch:  # a folder on the way that cannot be entered
        patch.setattr("llm_gym.data.sources.inputs._expand_path", denied)
        with pytest.raises(UserError, match="locked: cannot be read \\(Permission denied\\)"):
            expand_inputs([tmp_path / "a.jsonl"])

    def failing(*args, **kwargs):  # a disk failing under the reader
        raise OSError(5, "Input/output error")
        yield

    monkeypatch.setattr("llm_gym.data.sources.reading.read_batches", failing)
    with pytest.raises(UserError, match="a.jsonl: read error: Input/output error"):
        pack_bytes(tmp_path, [tmp_path / "a.jsonl"])


def test_hf_disk_directory_missing_a_listed_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    with pytest.raises(UserError, match="data-00000-of-00001.arrow: listed in .*state.json"
                                        " but missing"):
        expand_inputs([tmp_path])


def _run_cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["tools", "pack", *map(str, args), "--tokenizer", "ByteLevel"])
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def _damaged_parquet(path: Path) -> None:
    pq.write_table(pa.table({"text": TEXTS}), path, row_group_size=100, compression="snappy")
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = meta.data_page_offset
    data[start + 10 : start + 200] = b"\xff" * 190  # row group 1's page, its header included
    path.write_bytes(bytes(data))


def _truncated(raw_of: str) -> callable:
    def make(path: Path) -> None:
        raw = write_jsonl(path.with_suffix(".tmp"), TEXTS * 40)
        data = gzip.compress(raw) if raw_of == "gz" else zstandard.ZstdCompressor().compress(raw)
        path.write_bytes(data[: len(data) // 2])
    return make


def _corrupt_gzip(path: Path) -> None:
    data = bytearray(gzip.compress(write_jsonl(path.with_suffix(".tmp"), TEXTS * 40)))
    data[-8] ^= 0xFF  # the CRC-32 of the trailer: every line parses, the check does not
    path.write_bytes(bytes(data))


def _string_array(values: list[bytes]) -> pa.Array:
    """A string array holding exactly these bytes, UTF-8 or not: as a careless writer
    makes one (pyarrow checks UTF-8 when it builds strings from Python, not from buffers)."""
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    return pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
        pa.py_buffer(b"".join(values))])


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.ipc.new_stream(path, table.schema) as w:
        w.write_table(table)


BAD = {
    "parquet-no-column": ("in.parquet", lambda p: pq.write_table(
        pa.table({"body": ["a"], "id": [1]}), p), [],
        "in.parquet: no column 'text' (columns: 'body', 'id')"),
    "parquet-null-fails": ("in.parquet", lambda p: pq.write_table(
        pa.table({"text": ["a", None, "c"]}), p), [],
        "in.parquet: row 2: column 'text' is null, expected a string (--on-bad-line skip"),
    "parquet-int-column": ("in.parquet", lambda p: pq.write_table(pa.table({"text": [1]}), p),
                           [], "column 'text' is of type int64, not text"),
    "parquet-bad-utf8": ("in.parquet", lambda p: pq.write_table(
        pa.table({"text": pa.array([b"ok", b"\xff"], pa.binary())}), p), [],
        "in.parquet: row 2: column 'text' holds invalid UTF-8 at byte 1"),
    "parquet-string-not-utf8": ("in.parquet", lambda p: pq.write_table(
        pa.table({"text": _string_array([b"ok", b"ok\xff\xfe"])}), p), [],
        "in.parquet: row 2: column 'text' holds invalid UTF-8 at byte 3"),
    "arrow-string-not-utf8": ("in.arrow", lambda p: _write_arrow(
        p, pa.table({"text": _string_array([b"a", b"b", b"\xc3"])})), [],
        "in.arrow: row 3: column 'text' holds invalid UTF-8 at byte 1"),
    "parquet-two-text-columns": ("in.parquet", lambda p: pq.write_table(pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), p), [],
        "in.parquet: 2 columns are named 'text' (columns 1, 2)"),
    "parquet-damaged": ("in.parquet", _damaged_parquet, [],
                        "in.parquet: row group 2 of 3 (rows 101..200) cannot be read"),
    "parquet-not-parquet": ("in.parquet", lambda p: p.write_text("{}\n"), [],
                            "in.parquet: not a readable Parquet file"),
    "gzip-truncated": ("in.jsonl.gz", _truncated("gz"), [],
                       r"in.jsonl.gz: damaged gzip stream, found by compressed byte \d+ \(the"
                       r" damage lies at or before it; [1-9]\d+ whole lines read before\)"),
    "gzip-corrupt": ("in.jsonl.gz", _corrupt_gzip, [],
                     "in.jsonl.gz: damaged gzip stream, .*CRC check failed"),
    "zstd-truncated": ("in.jsonl.zst", _truncated("zst"), [],
                       "in.jsonl.zst: damaged zstd stream, .* ends inside a zstd frame"),
    "zstd-garbage": ("in.jsonl.zst", lambda p: p.write_bytes(b"not zstd at all" * 9), [],
                     "in.jsonl.zst: damaged zstd stream, found by compressed byte"),
    "parquet-named-jsonl": ("in.jsonl", lambda p: pq.write_table(pa.table({"text": ["a"]}), p),
                            [], "in.jsonl: read as jsonl, but it starts as a Parquet file does:"
                                " name it \\*.parquet or pass --format parquet"),
    "zstd-read-as-gzip": ("in.jsonl.zst", lambda p: p.write_bytes(
        zstandard.ZstdCompressor().compress(b'{"text": "a"}\n')), ["--format", "jsonl.gz"],
        "in.jsonl.zst: read as jsonl.gz, but it starts as zstd-compressed data does"),
    "parquet-no-rows": ("in.parquet", lambda p: pq.write_table(
        pa.table({"text": pa.array([], pa.string())}), p), [],
        "in.parquet: no documents to pack (the file has no rows)"),
    "arrow-garbage": ("in.arrow", lambda p: p.write_bytes(b"\x00" * 64), [],
                      "in.arrow: not a readable Arrow IPC file"),
    "jobs-without-shards": ("in.jsonl", lambda p: write_jsonl(p, ["a"]), ["--num-jobs", "2"],
                            "--num-jobs and --job-index split a sharded pack"),
}


@pytest.mark.parametrize("out", ["", ".", "sub/", "sub"])
def test_an_output_prefix_naming_a_folder_is_refused(tmp_path: Path, monkeypatch, capsys,
                                                     out: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", ["a"])
    (tmp_path / "sub").mkdir()
    code, said = _run_cli(capsys, "in.jsonl", "--out", out)
    assert code == 2 and "is a folder; the output is a prefix of two files" in said, said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "sub"]
    assert not any((tmp_path / "sub").iterdir())


@pytest.mark.parametrize(("name", "content"), [("manifest.json", '{\n "kind": "mine"\n}\n'),
                                               ("notes.txt", "my notes\n")])
def test_a_file_of_unknown_content_is_not_replaced(tmp_path: Path, monkeypatch, capsys,
                                                   name: str, content: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", ["a"])
    Path(name).write_text(content)
    code, said = _run_cli(capsys, "in.jsonl", "--out", Path(name).stem)  # .bin beside it
    assert code == 0, said
    code, said = main_code(capsys, ["tools", "tokenizer", "train", "in.jsonl",
                                    "--vocab-size", "300", "--out", name])
    assert code == 2 and f"output {name} exists and is not a tokenizer JSON" in said, said
    assert Path(name).read_text() == content


def main_code(capsys, args: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exit_2_output_untouched(tmp_path: Path, monkeypatch, capsys,
                                           case: str) -> None:
    import re

    name, make, extra, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    make(tmp_path / name)
    write_jsonl(tmp_path / "old.jsonl", ["previous pack"])  # its pack is not to be touched
    pack_files(expand_inputs([tmp_path / "old.jsonl"]), ByteLevelTokenizer(), tmp_path / "out")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out = _run_cli(capsys, name, "--out", "out", *extra)
    assert code == 2 and (message in out or re.search(message, out)), out
    assert "Traceback" not in out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_null_rows_skipped_are_counted_and_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"text": ["a", None, "c", None]}), "in.parquet")
    code, out = _run_cli(capsys, "in.parquet", "--out", "o", "--on-bad-line", "skip")
    assert code == 0, out
    assert "skipped in.parquet: row 2: column 'text' is null" in out
    assert "skipped in.parquet: row 4:" in out and "2 documents" in out
    assert "2 bad rows skipped" in out


def test_a_missing_extra_names_the_install_command(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.delitem(__import__("sys").modules, "pyarrow.parquet", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "pyarrow", raising=False)
    with pytest.raises(UserError, match=r"a Parquet file needs the pyarrow package, which is not"
                                        r" installed: pip install 'llm_gym\[formats\]'"):
        pack_files(expand_inputs([tmp_path / "in.parquet"]), ByteLevelTokenizer(), tmp_path / "o")


def test_iter_texts_reads_every_format_alike(corpus: Path) -> None:
    from llm_gym.data.sources import iter_texts

    for name in ("c.jsonl", "c.jsonl.zst", "c.parquet", "c.arrow"):
        assert list(iter_texts(expand_inputs([corpus / name]), batch_docs=64)) == TEXTS, name


def test_the_cli_offers_every_format() -> None:
    from llm_gym.cli.tool_cmds import _FORMATS
    from llm_gym.data.sources import FORMATS

    assert _FORMATS == FORMATS


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--workers", "10**9"),
                                         ("--shard-tokens", "0"), ("--job-index", "-1")])
def test_bad_numbers_are_usage_errors(tmp_path: Path, capsys, flag: str, value: str) -> None:
    code, out = _run_cli(capsys, tmp_path / "in.jsonl", "--out", tmp_path / "o", flag, value)
    assert code == 2 and flag in out and "Traceback" not in out, out
