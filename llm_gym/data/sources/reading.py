"""One input file -> its batches of documents, whatever the format."""

from __future__ import annotations

from collections.abc import Iterator

from llm_gym.data.jsonl_texts import OnBadLine, open_jsonl, read_batches
from llm_gym.data.sources.batch import TextBatch
from llm_gym.data.sources.compressed import compressed_jsonl_batches
from llm_gym.data.sources.inputs import InputFile
from llm_gym.data.sources.tables import arrow_batches, parquet_batches


def read_batches_of(file: InputFile, field: str, batch_docs: int,
                    on_bad_line: OnBadLine) -> Iterator[TextBatch]:
    """``file``'s documents in bounded batches, in file order. JSONL lines stay raw (they
    are parsed where they are tokenized); a table's bad rows are dealt with here."""
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
