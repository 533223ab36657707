"""Parquet and Arrow files (a Hugging Face dataset's storage) as batches of one text column.

Parquet is read one row group at a time and, within it, ``batch_docs`` rows at a time, so
memory is bounded by a row group's worth of the one column read, not by the file. Arrow
IPC files (the stream format ``datasets`` writes, or the random-access file format) are
read record batch by record batch.

The column must hold text: strings or binary data, plain or dictionary-encoded, every
value decoded as UTF-8 row by row. A null, or a value that is not UTF-8, is a bad row:
named as ``file: row N`` (1-based), and skipped or refused as ``on_bad_line`` says, like
a bad JSONL line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llm_gym.data.jsonl_texts import BATCH_BYTES, OnBadLine
from llm_gym.data.line_scan import BadLine, BadLineError
from llm_gym.data.sources.batch import TextBatch, location
from llm_gym.data.sources.extras import require
from llm_gym.errors import UserError

ARROW_FILE_MAGIC = b"ARROW1"  # the random-access format; a stream starts otherwise


def _check_text_column(schema: Any, field: str, path: Path, pa: Any) -> None:
    """A UserError unless ``schema`` has exactly one column ``field`` and it holds text
    (strings or binary data, plain or dictionary-encoded)."""
    found = schema.get_all_field_indices(field)
    if not found:
        have = ", ".join(map(repr, schema.names[:20])) or "none"
        raise UserError(f"{path}: no column {field!r} (columns: {have}); --field names the"
                        " text column")
    if len(found) > 1:
        raise UserError(f"{path}: {len(found)} columns are named {field!r} (columns"
                        f" {', '.join(str(i + 1) for i in found)}); which holds the text is"
                        " ambiguous: rename them in the file")
    kind = schema.field(found[0]).type
    values = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not any(test(values) for test in _text_tests(pa)):
        raise UserError(f"{path}: column {field!r} is of type {kind}, not text (string);"
                        " --field names the text column")


def _text_tests(pa: Any) -> tuple[Any, ...]:
    views = tuple(getattr(pa.types, name) for name in ("is_string_view", "is_binary_view")
                  if hasattr(pa.types, name))  # pyarrow >= 16
    return (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
            pa.types.is_large_binary, *views)


def _as_bytes(column: Any, pa: Any) -> Any:
    """The text column as binary values, whatever its type: each is then decoded and
    checked as UTF-8 row by row. (Reading a file, Arrow does not check that a string
    column holds UTF-8, so a bad writer's bytes would otherwise fail the whole read.)"""
    if pa.types.is_dictionary(column.type):  # e.g. a pandas categorical
        column = column.dictionary_decode()
    kind = column.type
    if pa.types.is_string(kind):
        return column.view(pa.binary())  # the same buffers, no copy
    if pa.types.is_large_string(kind):
        return column.view(pa.large_binary())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return column
    return column.cast(pa.large_binary())  # the view types: lengths computed on binary


def _batches_of_column(column: Any, first_row: int, nbytes: int, *, path: Path, field: str,
                       batch_docs: int, on_bad_line: OnBadLine, pa: Any,
                       pc: Any) -> Iterator[TextBatch]:
    """``column`` (an Arrow array of text) cut into batches of at most ``batch_docs`` rows
    and about BATCH_BYTES of text; ``nbytes`` (the file bytes it came from) shared among
    them."""
    column = _as_bytes(column, pa)
    n = len(column)
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    ends = np.cumsum(np.nan_to_num(lengths, nan=0.0).astype(np.int64))
    start = 0
    while start < n:
        stop = min(start + batch_docs, n)
        # Fewer rows where they are long, never fewer than one.
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, min(stop, int(np.searchsorted(ends, base + BATCH_BYTES)) + 1))
        values = column.slice(start, stop - start).to_pylist()
        texts, bad = [], []
        for i, value in enumerate(values, first_row + start):
            if value is not None:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    value = BadLine(i, f"column {field!r} holds invalid UTF-8 at byte"
                                       f" {e.start + 1}")
            elif value is None:
                value = BadLine(i, f"column {field!r} is null, expected a string")
            if isinstance(value, str):
                texts.append(value)
            elif on_bad_line == "fail":
                raise BadLineError(location(str(path), "row", value.line), value.reason)
            else:
                bad.append(value)
        yield TextBatch(str(path), "row", first_row + start, nbytes * (stop - start) // max(n, 1),
                        texts=texts, bad=bad)
        start = stop


def parquet_batches(path: Path, field: str, batch_docs: int,
                    on_bad_line: OnBadLine) -> Iterator[TextBatch]:
    pa = require("pyarrow", "a Parquet file")
    pq = require("pyarrow.parquet", "a Parquet file")
    pc = require("pyarrow.compute", "a Parquet file")
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file: {e}") from None
    _check_text_column(pf.schema_arrow, field, path, pa)
    row = 1
    for group in range(pf.num_row_groups):
        meta = pf.metadata.row_group(group)
        try:
            table = pf.read_row_group(group, columns=[field], use_threads=False)
            column = table.column(0).combine_chunks()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: row group {group + 1} of {pf.num_row_groups} (rows"
                            f" {row}..{row + meta.num_rows - 1}) cannot be read: {e}") from None
        stored = sum(meta.column(c).total_compressed_size for c in range(meta.num_columns))
        yield from _batches_of_column(column, row, stored, path=path, field=field,
                                      batch_docs=batch_docs, on_bad_line=on_bad_line,
                                      pa=pa, pc=pc)
        row += meta.num_rows


def arrow_batches(path: Path, field: str, batch_docs: int,
                  on_bad_line: OnBadLine) -> Iterator[TextBatch]:
    pa = require("pyarrow", "an Arrow file")
    pc = require("pyarrow.compute", "an Arrow file")
    try:
        # Read, not memory-mapped: mapped pages count in the resident set, which would
        # then grow with the file; a read batch is freed once it has been tokenized.
        source = pa.OSFile(str(path))
        random_access = source.read(len(ARROW_FILE_MAGIC)) == ARROW_FILE_MAGIC
        source.seek(0)
        reader = pa.ipc.open_file(source) if random_access else pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Arrow IPC file: {e}") from None
    _check_text_column(reader.schema, field, path, pa)
    count = reader.num_record_batches if random_access else None
    row, index, position = 1, 0, 0
    with source:
        while count is None or index < count:
            try:
                if random_access:
                    batch = reader.get_batch(index)
                else:
                    batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: record batch {index + 1} (from row {row}, byte"
                                f" {position}) cannot be read: {e}") from None
            column = batch.column(batch.schema.get_field_index(field))
            moved = (source.tell() - position) if not random_access else batch.nbytes
            position = source.tell()
            yield from _batches_of_column(column, row, moved, path=path, field=field,
                                          batch_docs=batch_docs, on_bad_line=on_bad_line,
                                          pa=pa, pc=pc)
            row += batch.num_rows
            index += 1
