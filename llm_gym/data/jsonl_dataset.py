"""Random access to the documents of a JSONL file through a memory map and its line index.

The index (``data.jsonl.idx`` beside the data, see ``line_index``) is built on first use
and rebuilt when the data changed since; under torch.distributed rank 0 builds it while
the other ranks wait, so a job never has N processes indexing the same file.
"""

from __future__ import annotations

import json
import logging
import mmap
import operator
import sys
from pathlib import Path
from typing import Any, Literal, Protocol

from llm_gym.data.line_index import (
    CorruptIndexError,
    LineIndex,
    build_line_index,
    default_index_path,
)
from llm_gym.data.line_scan import may_hold_surrogates, unpaired_surrogate
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def encode(self, text: str) -> Any: ...


class MemMapDataset:
    """Document ``i`` of a JSONL file: its text, its parsed record, or its token ids.

    ``field`` names the text in each record, as a key or a dotted path (``meta.body``).
    ``on_stale`` says what to do when the data changed after indexing: rebuild the
    index (logged) or refuse with a ``UserError`` that says what changed.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: Tokenizer | None = None,
        field: str = "text",
        *,
        on_stale: Literal["rebuild", "refuse"] = "rebuild",
    ) -> None:
        if on_stale not in ("rebuild", "refuse"):
            raise ValueError(f"on_stale must be 'rebuild' or 'refuse', not {on_stale!r}")
        self.path = Path(path)
        self.index_path = default_index_path(self.path)
        self.tokenizer = tokenizer
        self.field = field
        self.on_stale = on_stale
        check_input_file(self.path, "the dataset's JSONL file")
        # Resolved here rather than on first access: every rank constructs the dataset at
        # the same point, so the barrier below cannot deadlock against a rank that is
        # busy elsewhere, and DataLoader workers inherit a ready index.
        self._index: LineIndex | None = _ensure_index(self.path, self.index_path, on_stale)
        self._data: mmap.mmap | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        """Token ids of document ``i`` if there is a tokenizer, else its text."""
        text = self.text(i)
        if self.tokenizer is None:
            return text
        ids = self.tokenizer.encode(text)
        return getattr(ids, "ids", ids)  # a Hugging Face `tokenizers.Encoding` holds them

    def text(self, i: int) -> str:
        raw = self._raw(i)
        value = _lookup(self._parse(i, raw), self.field, lambda: self._where(i))
        if not isinstance(value, str):
            raise UserError(
                f"{self._where(i)}: field {self.field!r} is {type(value).__name__}, "
                "expected a string"
            )
        # A lone surrogate (from a "\ud800" escape) would fail in the tokenizer, unnamed.
        if may_hold_surrogates(raw) and (reason := unpaired_surrogate(value, self.field)):
            raise UserError(f"{self._where(i)}: {reason}")
        return value

    def record(self, i: int) -> Any:
        """Document ``i`` parsed as JSON."""
        return self._parse(i, self._raw(i))

    def _raw(self, i: int) -> bytes:
        start, end = self.index.span(operator.index(i))
        return self.data[start:end]

    def _parse(self, i: int, raw: bytes) -> Any:
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            start = self.index.span(operator.index(i))[0]
            raise UserError(
                f"{self._where(i)}: invalid UTF-8 at byte offset {start + e.start}"
            ) from None
        except json.JSONDecodeError as e:
            raise UserError(f"{self._where(i)}: invalid JSON: {e.msg} (column {e.colno})") from None

    @property
    def index(self) -> LineIndex:
        if self._index is None:  # unpickled in a worker: the parent already checked it
            self._index = LineIndex.open(self.index_path, self.path)
        return self._index

    @property
    def data(self) -> mmap.mmap:
        if self._data is None:
            with open(self.path, "rb") as f:
                self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._data

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None
        if self._index is not None:
            self._index.close()
            self._index = None

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps do not pickle; a DataLoader worker maps the files again.
        return {**self.__dict__, "_index": None, "_data": None}

    def _where(self, i: int) -> str:
        return f"{self.path} line {self.index.line_number(i)}"


def _lookup(record: Any, field: str, where: Any) -> Any:
    """``record[field]``, where a dotted ``field`` walks nested objects."""
    if isinstance(record, dict) and field in record:  # a key that itself contains dots
        return record[field]
    node = record
    for depth, key in enumerate(field.split(".")):
        if not isinstance(node, dict):
            at = ".".join(field.split(".")[:depth]) or "the record"
            raise UserError(
                f"{where()}: no field {field!r}: {at} is a JSON {type(node).__name__}, "
                "not an object"
            )
        if key not in node:
            keys = ", ".join(map(repr, list(node)[:10])) or "none"
            missing = f"missing {key!r}; " if key != field else ""
            raise UserError(f"{where()}: no field {field!r} ({missing}keys: {keys})")
        node = node[key]
    return node


def _ensure_index(source: Path, index_path: Path, on_stale: str) -> LineIndex:
    dist = _process_group()
    if dist is None:
        return _open_or_build(source, index_path, on_stale)
    if dist.get_rank() == 0:
        try:
            index = _open_or_build(source, index_path, on_stale)
        except Exception:
            dist.barrier()  # release the others before failing; they will fail alike
            raise
        dist.barrier()
        return index
    dist.barrier()
    # Normally just opens what rank 0 built. On node-local disks a node other than
    # rank 0's builds its own copy; concurrent builds are safe since each is atomic.
    return _open_or_build(source, index_path, on_stale)


def _open_or_build(source: Path, index_path: Path, on_stale: str) -> LineIndex:
    if not index_path.exists():
        log.info("indexing %s (no index yet)", source)
        build_line_index(source, index_path)
        return LineIndex.open(index_path, source)
    corrupt: CorruptIndexError | None = None
    try:
        index = LineIndex.open(index_path, source)
        reason = index.is_stale()
    except CorruptIndexError as e:
        index, reason, corrupt = None, e.message, e
    if reason is None:
        return index
    # Keep how it was built: a validated, bad-line-skipping index stays one.
    options: dict[str, Any] = corrupt.build_options if corrupt is not None else {}
    if index is not None:
        options = {"validate": index.validated, "on_bad_line": index.on_bad_line}
        index.close()
    if on_stale == "refuse":
        flags = " --validate" * bool(options.get("validate"))
        flags += " --on-bad-line skip" * (options.get("on_bad_line") == "skip")
        raise UserError(
            f"{index_path}: the index is stale: {reason}. "
            f"Rebuild it with `llm_gym tools index {source}{flags}`, or allow rebuilding."
        )
    log.warning("rebuilding the index of %s: %s", source, reason)
    build_line_index(source, index_path, **options)
    return LineIndex.open(index_path, source)


def _process_group() -> Any:
    """torch.distributed if a multi-process group is up, else None (torch left unimported)."""
    if "torch" not in sys.modules:  # no process group without torch; spare the import
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None
