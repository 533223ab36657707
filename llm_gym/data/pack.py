"""``pack``: JSONL documents -> tokenized, eod-terminated, packed token files.

The source is streamed in bounded batches of lines; each batch is parsed and tokenized in
a worker process, and results are written strictly in submission order, so the output is
byte-identical for any number of workers. At most ``2 * workers`` batches are in flight,
which bounds memory whatever the file size. Errors name the file and the 1-based line.

Workers are started with the ``spawn`` method: the parent may hold threads (torch, the
tokenizers thread pool) that ``fork`` would copy in an inconsistent state. As with any
``spawn`` user, a script calling ``pack_jsonl`` with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from llm_gym.data.file_kinds import PACKED_BIN, PACKED_IDX, check_outputs
from llm_gym.data.jsonl_texts import (
    Batch,
    OnBadLine,
    check_on_bad_line,
    iter_jsonl_texts,
    open_jsonl,
    parse_lines,
    read_batches,
)
from llm_gym.data.line_scan import MAX_BAD_LINES_KEPT, BadLine, BadLineError
from llm_gym.data.packed import PackedWriter, pack_paths, token_dtype
from llm_gym.data.tokenizer import Tokenizer
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file, make_parent_dirs

__all__ = ["PackSummary", "iter_jsonl_texts", "pack_jsonl", "parse_lines"]

_Result = tuple[np.ndarray, np.ndarray, int, list[BadLine]]


@dataclass(frozen=True)
class PackSummary:
    source: Path
    bin_path: Path
    idx_path: Path
    n_docs: int
    n_tokens: int  # eod tokens included
    n_empty_lines: int  # blank or whitespace-only lines, skipped
    bytes_read: int
    dtype: str
    seconds: float
    bad_lines: tuple[BadLine, ...] = ()  # the first MAX_BAD_LINES_KEPT skipped
    n_bad_lines: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.n_docs} documents, {self.n_tokens} tokens ({self.dtype}) from {self.source}"
            f" ({self.bytes_read / 1e6:.1f} MB, {self.n_empty_lines} empty lines skipped"
            + (f", {self.n_bad_lines} bad lines skipped" if self.n_bad_lines else "") + ")"
            f" in {self.seconds:.2f}s -> {self.bin_path}, {self.idx_path}"
        )


def _encode(
    tokenizer: Tokenizer, batch: Batch, field: str, source: str, dtype: np.dtype,
    on_bad_line: OnBadLine,
) -> _Result:
    """(tokens with one eod per document, document lengths, blank lines, bad lines
    skipped) for one batch."""
    texts, bad = parse_lines(batch.lines, batch.first_line, field, source, on_bad_line)
    ids = tokenizer.encode_batch(texts) if texts else []
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    eod = (tokenizer.eod_id,)
    flat = np.fromiter(
        chain.from_iterable(chain(x, eod) for x in ids), dtype=np.int64, count=int(lengths.sum())
    )
    # Range-checked while still wide: an id >= vocab_size must not wrap in a narrow dtype.
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= tokenizer.vocab_size):
        bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
        last = batch.first_line + len(batch.lines) - 1
        raise UserError(
            f"{source}:{batch.first_line}-{last}: tokenizer {tokenizer!r} produced id {bad},"
            f" outside its vocabulary 0..{tokenizer.vocab_size - 1}"
        )
    return flat.astype(dtype), lengths, len(batch.lines) - len(texts) - len(bad), bad


# Per-worker state, set once by the initializer: the tokenizer is unpickled once, not per batch.
_worker: dict = {}


def _init_worker(
    tokenizer: Tokenizer, field: str, source: str, dtype: str, on_bad_line: OnBadLine
) -> None:
    # One process per core already; the tokenizers library's own thread pool would
    # oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker.update(tokenizer=tokenizer, field=field, source=source, dtype=np.dtype(dtype),
                   on_bad_line=on_bad_line)


def _work(batch: Batch) -> _Result | UserError:
    w = _worker
    return _encode_or_error(w["tokenizer"], batch, w["field"], w["source"], w["dtype"],
                            w["on_bad_line"])


def _encode_or_error(
    tokenizer: Tokenizer, batch: Batch, field: str, source: str, dtype: np.dtype,
    on_bad_line: OnBadLine,
) -> _Result | UserError:
    try:
        return _encode(tokenizer, batch, field, source, dtype, on_bad_line)
    except BadLineError as e:
        return e  # re-raised in the caller, without a remote traceback attached
    except UserError as e:
        return UserError(e.message)


def pack_jsonl(
    source: Path,
    tokenizer: Tokenizer,
    out_prefix: Path,
    *,
    field: str = "text",
    workers: int = 1,
    batch_docs: int = 256,
    progress: bool = False,
    on_bad_line: OnBadLine = "fail",
) -> PackSummary:
    """Tokenize every document of ``source`` into ``out_prefix.bin`` / ``.idx``.

    ``workers=1`` tokenizes in this process. Existing outputs are replaced only when the
    new pack is complete; on any error they are left exactly as they were. Outputs that
    would replace the source or a file of another kind are refused before any work.
    A bad line raises, or with ``on_bad_line="skip"`` is left out and counted.
    """
    source, out_prefix = Path(source), Path(out_prefix)
    if workers < 1 or batch_docs < 1:
        raise UserError(f"workers and batch_docs must be >= 1, got {workers} and {batch_docs}")
    check_on_bad_line(on_bad_line)
    check_input_file(source, "the JSONL file")
    bin_path, idx_path = pack_paths(out_prefix)
    inputs = [source, *getattr(tokenizer, "files", ())]  # a tokenizer read from files
    check_outputs({bin_path: PACKED_BIN, idx_path: PACKED_IDX}, inputs)
    started = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    make_parent_dirs(bin_path)
    empty = read = n_bad = 0
    bad_lines: list[BadLine] = []
    with (
        open_jsonl(source) as f,
        _progress(progress, source) as advance,
        PackedWriter(
            out_prefix,
            vocab_size=tokenizer.vocab_size,
            eod_id=tokenizer.eod_id,
            fingerprint=tokenizer.fingerprint(),
        ) as writer,
        # closing(): on an error the workers are stopped here, not whenever the
        # generator happens to be collected.
        closing(
            _tokenize_ordered(
                f, batch_docs, tokenizer, field, str(source), dtype, workers, on_bad_line
            )
        ) as results,
    ):
        for nbytes, result in results:
            if isinstance(result, UserError):
                raise result
            tokens, lengths, n_empty, bad = result
            writer.add_documents(tokens, lengths)
            empty += n_empty
            n_bad += len(bad)
            bad_lines.extend(bad[: MAX_BAD_LINES_KEPT - len(bad_lines)])
            read += nbytes
            advance(nbytes)
        if writer.n_docs == 0:
            what = "is empty" if read == 0 else "has only blank lines"
            if n_bad:
                what = f"has no valid lines: {n_bad} bad lines skipped"
            raise UserError(f"{source}: no documents to pack (the file {what})")
    return PackSummary(
        source, bin_path, idx_path, writer.n_docs, writer.n_tokens, empty, read,
        dtype.name, time.perf_counter() - started, tuple(bad_lines), n_bad,
    )  # fmt: skip


def _tokenize_ordered(
    f: BinaryIO,
    batch_docs: int,
    tokenizer: Tokenizer,
    field: str,
    source: str,
    dtype: np.dtype,
    workers: int,
    on_bad_line: OnBadLine,
) -> Iterator[tuple[int, _Result | UserError]]:
    """(bytes, result or error) of each batch of ``f``, in file order."""
    batches = read_batches(f, batch_docs)
    if workers == 1:
        # One process, two threads: encode_batch releases the GIL, so one thread parses
        # the next batch's JSON while the other's batch is being encoded.
        pool: Executor = ThreadPoolExecutor(2)
        window = 4

        def submit(batch: Batch) -> Future:
            return pool.submit(
                _encode_or_error, tokenizer, batch, field, source, dtype, on_bad_line
            )
    else:
        ctx = multiprocessing.get_context("spawn")
        init = (tokenizer, field, source, dtype.str, on_bad_line)
        pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=init)
        window = 2 * workers

        def submit(batch: Batch) -> Future:
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
def _progress(enabled: bool, source: Path) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(nbytes)``: a rich progress bar over the source's bytes, or a no-op."""
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
        task = bar.add_task(source.name, total=source.stat().st_size)
        yield lambda nbytes: bar.advance(task, nbytes)
