"""One input file -> its batches of documents, whatever the format."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from llm_gym.data.jsonl_texts import OnBadLine, open_jsonl, parse_lines, read_batches
from llm_gym.data.sources.batch import TextBatch, location
from llm_gym.data.sources.compressed import compressed_jsonl_batches
from llm_gym.data.sources.inputs import InputFile
from llm_gym.data.sources.tables import ARROW_FILE_MAGIC, arrow_batches, parquet_batches
from llm_gym.errors import UserError

# The first bytes of the binary formats, to name the right one when a file is read as
# another (a Parquet file called .jsonl would otherwise be "invalid UTF-8 at line 1").
_MAGICS = ((b"PAR1", "parquet", "a Parquet file", ".parquet"),
           (b"\x1f\x8b", "jsonl.gz", "gzip-compressed data", ".jsonl.gz"),
           (b"\x28\xb5\x2f\xfd", "jsonl.zst", "zstd-compressed data", ".jsonl.zst"),
           (ARROW_FILE_MAGIC, "arrow", "an Arrow IPC file", ".arrow"),
           (b"\xff\xff\xff\xff", "arrow", "an Arrow IPC stream", ".arrow"))


def check_content(file: InputFile) -> None:
    """A UserError if ``file`` starts like another of the binary formats than its own."""
    try:
        with file.path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return  # the reader names the problem
    for magic, fmt, what, suffix in _MAGICS:
        if head.startswith(magic) and fmt != file.format:
            raise UserError(f"{file.path}: read as {file.format}, but it starts as {what}"
                            f" does: name it *{suffix} or pass --format {fmt}")


def read_batches_of(file: InputFile, field: str, batch_docs: int,
                    on_bad_line: OnBadLine) -> Iterator[TextBatch]:
    """``file``'s documents in bounded batches, in file order. JSONL lines stay raw (they
    are parsed where they are tokenized); a table's bad rows are dealt with here."""
    try:
        yield from _batches_of(file, field, batch_docs, on_bad_line)
    except OSError as e:  # a disk or network file system failing under the reader
        raise UserError(f"{file.path}: read error: {e.strerror or e}") from None


def _batches_of(file: InputFile, field: str, batch_docs: int,
                on_bad_line: OnBadLine) -> Iterator[TextBatch]:
    check_content(file)
    if file.format == "parquet":
        yield from parquet_batches(file.path, field, batch_docs, on_bad_line)
        return
    if file.format == "arrow":
        yield from arrow_batches(file.path, field, batch_docs, on_bad_line)
        return
    with open_jsonl(file.path) as raw:
        if file.format in ("jsonl.gz", "jsonl.zst"):
            yield from compressed_jsonl_batches(raw, file.path, file.format, batch_docs)
            return
        for batch in read_batches(raw, batch_docs):
            yield TextBatch(str(file.path), "line", batch.first_line, batch.nbytes,
                            lines=batch.lines)


def iter_texts(files: list[InputFile], field: str = "text", batch_docs: int = 1024, *,
               on_bad_line: OnBadLine = "fail",
               on_skip: Callable[[str, str], None] | None = None) -> Iterator[str]:
    """Every document's text of ``files`` in order, in this process (tokenizer training);
    skipped bad lines or rows go to ``on_skip(where, reason)``."""
    for file in files:
        for batch in read_batches_of(file, field, batch_docs, on_bad_line):
            if batch.lines is not None:
                texts, bad = parse_lines(batch.lines, batch.first, field, batch.source,
                                         on_bad_line)
            else:
                texts, bad = batch.texts or [], batch.bad
            for line in bad if on_skip is not None else ():
                on_skip(location(batch.source, batch.unit, line.line), line.reason)
            yield from texts
