"""``pack``: documents -> tokenized, eod-terminated, packed token files.

The inputs (JSONL, compressed JSONL, Parquet, Arrow; see ``llm_gym.data.sources``) are
read one after the other in bounded batches; each batch is parsed (JSONL) and tokenized
in a worker process, and results are written strictly in submission order, so the output
is byte-identical for any number of workers, and the same texts give the same bytes
whatever format they came in. At most ``2 * workers`` batches are in flight, which
bounds memory whatever the input size. Errors name the file and the 1-based line or row.

Workers are started with the ``spawn`` method: the parent may hold threads (torch, the
tokenizers thread pool) that ``fork`` would copy in an inconsistent state. As with any
``spawn`` user, a script calling ``pack_files`` with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from llm_gym.data.file_kinds import PACKED_BIN, PACKED_IDX, check_outputs
from llm_gym.data.jsonl_texts import OnBadLine, check_on_bad_line, iter_jsonl_texts, parse_lines
from llm_gym.data.line_scan import MAX_BAD_LINES_KEPT, BadLineError
from llm_gym.data.packed import PackedWriter, pack_paths, token_dtype
from llm_gym.data.sources import InputFile, TextBatch, location, read_batches_of
from llm_gym.data.tokenizer import Tokenizer
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file, make_parent_dirs

__all__ = ["PackSummary", "iter_jsonl_texts", "pack_files", "pack_jsonl", "parse_lines"]

# A skipped document: where it was ("file:line" or "file: row N") and why.
Skipped = tuple[str, str]
_Result = tuple[np.ndarray, np.ndarray, int, list[Skipped]]


@dataclass(frozen=True)
class PackSummary:
    sources: tuple[Path, ...]
    outputs: tuple[Path, ...]
    n_docs: int
    n_tokens: int  # eod tokens included
    n_empty_lines: int  # blank or whitespace-only JSONL lines, skipped
    bytes_read: int  # of the input files as stored (compressed where they are)
    dtype: str
    seconds: float
    bad_lines: tuple[Skipped, ...] = ()  # the first MAX_BAD_LINES_KEPT skipped
    n_bad_lines: int = 0
    n_shards: int = 0  # 0: one pack, PREFIX.bin + PREFIX.idx
    records: str = "lines"  # what a bad one is called: JSONL lines, table rows, or both

    @property
    def source(self) -> Path:
        return self.sources[0]

    @property
    def bin_path(self) -> Path:
        return self.outputs[0]

    @property
    def idx_path(self) -> Path:
        return self.outputs[1]

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        source = str(self.source) if len(self.sources) == 1 else f"{len(self.sources)} inputs"
        if self.n_shards:
            target = f"{self.n_shards} shards, {', '.join(map(str, self.outputs))}"
        else:
            target = ", ".join(map(str, self.outputs))
        return (
            f"{self.n_docs} documents, {self.n_tokens} tokens ({self.dtype}) from {source}"
            f" ({self.bytes_read / 1e6:.1f} MB, {self.n_empty_lines} empty lines skipped"
            + (f", {self.n_bad_lines} bad {self.records} skipped" if self.n_bad_lines else "")
            + ")"
            f" in {self.seconds:.2f}s -> {target}"
        )


def _encode(
    tokenizer: Tokenizer, batch: TextBatch, field: str, dtype: np.dtype, on_bad_line: OnBadLine
) -> _Result:
    """(tokens with one eod per document, document lengths, blank lines, documents
    skipped) for one batch."""
    if batch.lines is not None:
        texts, bad = parse_lines(batch.lines, batch.first, field, batch.source, on_bad_line)
        n_empty = len(batch.lines) - len(texts) - len(bad)
    else:
        texts, bad, n_empty = batch.texts or [], batch.bad, 0
    ids = tokenizer.encode_batch(texts) if texts else []
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    eod = (tokenizer.eod_id,)
    flat = np.fromiter(
        chain.from_iterable(chain(x, eod) for x in ids), dtype=np.int64, count=int(lengths.sum())
    )
    # Range-checked while still wide: an id >= vocab_size must not wrap in a narrow dtype.
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= tokenizer.vocab_size):
        wrong = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        where = location(batch.source, batch.unit, batch.first)
        raise UserError(
            f"{where}-{batch.first + batch.size - 1}: tokenizer {tokenizer!r} produced id"
            f" {wrong}, outside its vocabulary 0..{tokenizer.vocab_size - 1}"
        )
    skipped = [(location(batch.source, batch.unit, b.line), b.reason) for b in bad]
    return flat.astype(dtype), lengths, n_empty, skipped


# Per-worker state, set once by the initializer: the tokenizer is unpickled once, not per batch.
_worker: dict = {}


def _init_worker(tokenizer: Tokenizer, field: str, dtype: str, on_bad_line: OnBadLine) -> None:
    # One process per core already; the tokenizers library's own thread pool would
    # oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker.update(tokenizer=tokenizer, field=field, dtype=np.dtype(dtype),
                   on_bad_line=on_bad_line)


def _work(batch: TextBatch) -> _Result | UserError:
    w = _worker
    return _encode_or_error(w["tokenizer"], batch, w["field"], w["dtype"], w["on_bad_line"])


def _encode_or_error(
    tokenizer: Tokenizer, batch: TextBatch, field: str, dtype: np.dtype, on_bad_line: OnBadLine
) -> _Result | UserError:
    try:
        return _encode(tokenizer, batch, field, dtype, on_bad_line)
    except BadLineError as e:
        return e  # re-raised in the caller, without a remote traceback attached
    except UserError as e:
        return UserError(e.message)


@dataclass
class Tally:
    """What the documents written so far add up to, besides the writer's own counts."""

    n_empty: int = 0
    n_bad: int = 0
    bad: list[Skipped] = field(default_factory=list)

    def add(self, n_empty: int, skipped: list[Skipped]) -> None:
        self.n_empty += n_empty
        self.n_bad += len(skipped)
        self.bad.extend(skipped[: MAX_BAD_LINES_KEPT - len(self.bad)])

    def nothing_packed(self, sources: Sequence[Path], records: str = "lines") -> UserError:
        if len(sources) == 1:
            names, the, is_, has = str(sources[0]), "the file", "is", "has"
        else:
            names, the, is_, has = f"{len(sources)} inputs", "the inputs", "are", "have"
        what = f"{the} {has} only blank lines" if records == "lines" else f"{the} {has} no rows"
        if sum(p.stat().st_size for p in sources) == 0:
            what = f"{the} {is_} empty"
        if self.n_bad:
            what = f"{the} {has} no valid {records}: {self.n_bad} bad {records} skipped"
        return UserError(f"{names}: no documents to pack ({what})")


def records_of(files: Sequence[InputFile]) -> str:
    """What the inputs' documents are called in counts of bad ones: JSONL has lines, a
    table (Parquet, Arrow) rows."""
    tables = {f.format in ("parquet", "arrow") for f in files}
    return "rows" if tables == {True} else "lines or rows" if len(tables) > 1 else "lines"


def check_pack_arguments(workers: int, batch_docs: int, on_bad_line: str) -> None:
    if workers < 1 or batch_docs < 1:
        raise UserError(f"workers and batch_docs must be >= 1, got {workers} and {batch_docs}")
    check_on_bad_line(on_bad_line)


def tokenized_documents(
    files: Sequence[InputFile],
    tokenizer: Tokenizer,
    *,
    field: str,
    workers: int,
    batch_docs: int,
    progress: bool,
    on_bad_line: OnBadLine,
    tally: Tally,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens, document lengths) of every batch of ``files``, in input order; blank and
    skipped lines are counted in ``tally``. A bad document or damaged file raises."""
    dtype = token_dtype(tokenizer.vocab_size)
    batches = chain.from_iterable(
        read_batches_of(f, field, batch_docs, on_bad_line) for f in files
    )
    total = sum(f.path.stat().st_size for f in files)
    with (
        _progress(progress, files[0].path.name if len(files) == 1 else f"{len(files)} files",
                  total) as advance,
        # closing(): on an error the workers are stopped here, not whenever the
        # generator happens to be collected.
        closing(
            _tokenize_ordered(batches, tokenizer, field, dtype, workers, on_bad_line)
        ) as results,
    ):
        for nbytes, result in results:
            if isinstance(result, UserError):
                raise result
            tokens, lengths, n_empty, skipped = result
            tally.add(n_empty, skipped)
            advance(nbytes)
            yield tokens, lengths


def pack_files(
    files: Sequence[InputFile],
    tokenizer: Tokenizer,
    out_prefix: Path,
    *,
    field: str = "text",
    workers: int = 1,
    batch_docs: int = 256,
    progress: bool = False,
    on_bad_line: OnBadLine = "fail",
) -> PackSummary:
    """Tokenize every document of ``files``, in order, into ``out_prefix.bin`` / ``.idx``.

    ``workers=1`` tokenizes in this process. Existing outputs are replaced only when the
    new pack is complete; on any error they are left exactly as they were. Outputs that
    would replace an input or a file of another kind are refused before any work.
    A bad line or row raises, or with ``on_bad_line="skip"`` is left out and counted.
    """
    out_prefix = Path(out_prefix)
    check_pack_arguments(workers, batch_docs, on_bad_line)
    if not files:
        raise UserError("no input files to pack")
    if out_prefix.name in ("", ".", "..") or out_prefix.is_dir():
        # PREFIX.bin would be written beside the folder (or as a hidden "..bin" here).
        raise UserError(f"--out {out_prefix}: is a folder; the output is a prefix of two"
                        f" files, e.g. {out_prefix / 'corpus'} writes corpus.bin and"
                        " corpus.idx in it (--shard-tokens N writes shards into a folder)")
    bin_path, idx_path = pack_paths(out_prefix)
    inputs = [f.path for f in files] + list(getattr(tokenizer, "files", ()))
    check_outputs({bin_path: PACKED_BIN, idx_path: PACKED_IDX}, inputs)
    started = time.perf_counter()
    make_parent_dirs(bin_path)
    tally = Tally()
    with PackedWriter(
        out_prefix,
        vocab_size=tokenizer.vocab_size,
        eod_id=tokenizer.eod_id,
        fingerprint=tokenizer.fingerprint(),
    ) as writer:
        for tokens, lengths in tokenized_documents(
            files, tokenizer, field=field, workers=workers, batch_docs=batch_docs,
            progress=progress, on_bad_line=on_bad_line, tally=tally,
        ):  # fmt: skip
            writer.add_documents(tokens, lengths)
        if writer.n_docs == 0:
            raise tally.nothing_packed([f.path for f in files], records_of(files))
    return PackSummary(
        tuple(f.path for f in files), (bin_path, idx_path), writer.n_docs, writer.n_tokens,
        tally.n_empty, sum(f.path.stat().st_size for f in files), writer.dtype.name,
        time.perf_counter() - started, tuple(tally.bad), tally.n_bad,
        records=records_of(files),
    )  # fmt: skip


def pack_jsonl(source: Path, tokenizer: Tokenizer, out_prefix: Path, **options) -> PackSummary:
    """``pack_files`` of one JSONL file (any name, not decompressed)."""
    source = Path(source)
    check_pack_arguments(options.get("workers", 1), options.get("batch_docs", 256),
                         options.get("on_bad_line", "fail"))
    check_input_file(source, "the JSONL file")
    return pack_files([InputFile(source, "jsonl")], tokenizer, out_prefix, **options)


def _tokenize_ordered(
    batches: Iterable[TextBatch],
    tokenizer: Tokenizer,
    field: str,
    dtype: np.dtype,
    workers: int,
    on_bad_line: OnBadLine,
) -> Iterator[tuple[int, _Result | UserError]]:
    """(bytes, result or error) of each batch, in input order."""
    if workers == 1:
        # One process, two threads: encode_batch releases the GIL, so one thread parses
        # the next batch's JSON while the other's batch is being encoded.
        pool: Executor = ThreadPoolExecutor(2)
        window = 4

        def submit(batch: TextBatch) -> Future:
            return pool.submit(_encode_or_error, tokenizer, batch, field, dtype, on_bad_line)
    else:
        ctx = multiprocessing.get_context("spawn")
        init = (tokenizer, field, dtype.str, on_bad_line)
        pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=init)
        window = 2 * workers

        def submit(batch: TextBatch) -> Future:
            return pool.submit(_work, batch)

    # A sliding window of futures instead of Pool.imap: imap's feeder thread reads the
    # whole input ahead of the workers, so memory would grow with the file.
    with pool:
        pending: deque[tuple[int, Future]] = deque()
        try:
            for batch in batches:
                pending.append((batch.nbytes, submit(batch)))
                if len(pending) >= window:
                    nbytes, fut = pending.popleft()
                    yield nbytes, fut.result()
            while pending:
                nbytes, fut = pending.popleft()
                yield nbytes, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


@contextmanager
def _progress(enabled: bool, name: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(nbytes)``: a rich progress bar over the inputs' bytes, or a no-op."""
    if not enabled:
        yield lambda nbytes: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("packing {task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, TransferSpeedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(name, total=total)
        yield lambda nbytes: bar.advance(task, nbytes)
