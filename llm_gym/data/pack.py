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

import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np

from llm_gym.data.packed import PackedWriter, pack_paths, token_dtype
from llm_gym.data.tokenizer import Tokenizer
from llm_gym.errors import UserError

# A batch ends at batch_docs lines or at this many bytes, whichever comes first, so a file
# of huge documents cannot make one batch (and its pickled copy) arbitrarily large.
_BATCH_BYTES = 8 << 20


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

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.n_docs} documents, {self.n_tokens} tokens ({self.dtype}) from {self.source}"
            f" ({self.bytes_read / 1e6:.1f} MB, {self.n_empty_lines} empty lines skipped)"
            f" in {self.seconds:.2f}s -> {self.bin_path}, {self.idx_path}"
        )


@dataclass(frozen=True)
class _Batch:
    first_line: int  # 1-based number of lines[0]
    lines: list[bytes]
    nbytes: int


def _read_batches(f: BinaryIO, batch_docs: int) -> Iterator[_Batch]:
    # Binary mode: lines end at b"\n" only, as JSONL defines them (text mode would also end
    # one at a bare "\r"), and bytes are decoded per line, so invalid UTF-8 is reported at
    # its line instead of aborting the whole read.
    lines: list[bytes] = []
    first, nbytes = 1, 0
    for lineno, line in enumerate(f, 1):
        if not lines:
            first = lineno
        lines.append(line)
        nbytes += len(line)
        if len(lines) >= batch_docs or nbytes >= _BATCH_BYTES:
            yield _Batch(first, lines, nbytes)
            lines, nbytes = [], 0
    if lines:
        yield _Batch(first, lines, nbytes)


_MISSING = object()


def _lookup(obj: dict, field: str) -> object:
    # A key containing dots wins over the dotted path, so {"a.b": ...} stays reachable.
    if field in obj:
        return obj[field]
    node: object = obj
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def parse_lines(lines: Sequence[bytes], first_line: int, field: str, source: str) -> list[str]:
    """The ``field`` string (a key or dotted path) of each non-blank JSONL line.

    Bad lines raise UserError at ``source:line``.
    """
    texts: list[str] = []
    for lineno, raw in enumerate(lines, first_line):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            at = f"byte {e.start + 1} of the line"
            raise UserError(f"{source}:{lineno}: invalid UTF-8 at {at}") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}:{lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{source}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        text = _lookup(obj, field)
        if text is _MISSING:
            have = ", ".join(map(repr, list(obj)[:10])) or "none"
            raise UserError(f"{source}:{lineno}: no field {field!r} (fields: {have})")
        if not isinstance(text, str):
            raise UserError(
                f"{source}:{lineno}: field {field!r} is a {type(text).__name__}, expected a string"
            )
        texts.append(text)
    return texts


def iter_jsonl_texts(source: Path, field: str = "text", batch_docs: int = 1024) -> Iterator[str]:
    """Stream the ``field`` texts of a JSONL file (blank lines skipped), for one process."""
    with _open_source(source) as f:
        for batch in _read_batches(f, batch_docs):
            yield from parse_lines(batch.lines, batch.first_line, field, str(source))


def _open_source(source: Path) -> BinaryIO:
    try:
        return open(source, "rb")
    except FileNotFoundError:
        raise UserError(f"{source}: JSONL file not found") from None
    except OSError as e:
        raise UserError(f"{source}: cannot read: {e}") from None


def _encode(
    tokenizer: Tokenizer, batch: _Batch, field: str, source: str, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, int]:
    """(tokens with one eod per document, document lengths, blank lines) for one batch."""
    texts = parse_lines(batch.lines, batch.first_line, field, source)
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
    return flat.astype(dtype), lengths, len(batch.lines) - len(texts)


# Per-worker state, set once by the initializer: the tokenizer is unpickled once, not per batch.
_worker: dict = {}


def _init_worker(tokenizer: Tokenizer, field: str, source: str, dtype: str) -> None:
    # One process per core already; the tokenizers library's own thread pool would
    # oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker.update(tokenizer=tokenizer, field=field, source=source, dtype=np.dtype(dtype))


def _work(batch: _Batch) -> tuple[np.ndarray, np.ndarray, int] | str:
    w = _worker
    return _encode_or_message(w["tokenizer"], batch, w["field"], w["source"], w["dtype"])


def _encode_or_message(
    tokenizer: Tokenizer, batch: _Batch, field: str, source: str, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, int] | str:
    try:
        return _encode(tokenizer, batch, field, source, dtype)
    except UserError as e:
        return e.message  # re-raised in the caller, without a remote traceback attached


def pack_jsonl(
    source: Path,
    tokenizer: Tokenizer,
    out_prefix: Path,
    *,
    field: str = "text",
    workers: int = 1,
    batch_docs: int = 256,
    progress: bool = False,
) -> PackSummary:
    """Tokenize every document of ``source`` into ``out_prefix.bin`` / ``.idx``.

    ``workers=1`` tokenizes in this process. Existing outputs are replaced only when the
    new pack is complete; on any error they are left exactly as they were.
    """
    source, out_prefix = Path(source), Path(out_prefix)
    if workers < 1 or batch_docs < 1:
        raise UserError(f"workers and batch_docs must be >= 1, got {workers} and {batch_docs}")
    if source.is_dir():
        raise UserError(f"{source}: is a directory, expected a JSONL file")
    started = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    empty = read = 0
    with (
        _open_source(source) as f,
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
            _tokenize_ordered(f, batch_docs, tokenizer, field, str(source), dtype, workers)
        ) as results,
    ):
        for nbytes, result in results:
            if isinstance(result, str):
                raise UserError(result)
            tokens, lengths, n_empty = result
            writer.add_documents(tokens, lengths)
            empty += n_empty
            read += nbytes
            advance(nbytes)
        if writer.n_docs == 0:
            what = "is empty" if read == 0 else "has only blank lines"
            raise UserError(f"{source}: no documents to pack (the file {what})")
    bin_path, idx_path = pack_paths(out_prefix)
    return PackSummary(
        source, bin_path, idx_path, writer.n_docs, writer.n_tokens, empty, read,
        dtype.name, time.perf_counter() - started,
    )  # fmt: skip


def _tokenize_ordered(
    f: BinaryIO,
    batch_docs: int,
    tokenizer: Tokenizer,
    field: str,
    source: str,
    dtype: np.dtype,
    workers: int,
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, int] | str]]:
    """(bytes, result or error message) of each batch of ``f``, in file order."""
    batches = _read_batches(f, batch_docs)
    if workers == 1:
        # One process, two threads: encode_batch releases the GIL, so one thread parses
        # the next batch's JSON while the other's batch is being encoded.
        pool: Executor = ThreadPoolExecutor(2)
        window = 4

        def submit(batch: _Batch) -> Future:
            return pool.submit(_encode_or_message, tokenizer, batch, field, source, dtype)
    else:
        ctx = multiprocessing.get_context("spawn")
        init = (tokenizer, field, source, dtype.str)
        pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=init)
        window = 2 * workers

        def submit(batch: _Batch) -> Future:
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
