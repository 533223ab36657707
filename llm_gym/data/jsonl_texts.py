"""The text field of each JSONL line, read in bounded batches, bad lines named or skipped.

Shared by ``pack`` and tokenizer training. A line is bad when it is not UTF-8, not JSON,
not an object, lacks the field, holds a non-string there, or holds a string that cannot be
encoded again (an unpaired surrogate from a ``\\ud800`` escape, which ``json.loads``
accepts and every tokenizer chokes on). With ``on_bad_line="fail"`` the first one raises
a ``BadLineError`` at ``file:line``; with ``"skip"`` it is left out and reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from llm_gym.data.line_scan import BadLine, BadLineError, may_hold_surrogates, unpaired_surrogate
from llm_gym.fileio import open_input

OnBadLine = Literal["fail", "skip"]

# A batch ends at batch_docs lines or at this many bytes, whichever comes first, so a file
# of huge documents cannot make one batch (and its pickled copy) arbitrarily large.
BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class Batch:
    first_line: int  # 1-based number of lines[0]
    lines: list[bytes]
    nbytes: int


def check_on_bad_line(on_bad_line: str) -> None:
    if on_bad_line not in ("fail", "skip"):
        raise ValueError(f"on_bad_line must be 'fail' or 'skip', not {on_bad_line!r}")


def open_jsonl(source: Path) -> BinaryIO:
    """The JSONL file opened for reading, if it is a regular file (a FIFO would hang)."""
    return open_input(Path(source), "the JSONL file")


def read_batches(f: BinaryIO, batch_docs: int) -> Iterator[Batch]:
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
        if len(lines) >= batch_docs or nbytes >= BATCH_BYTES:
            yield Batch(first, lines, nbytes)
            lines, nbytes = [], 0
    if lines:
        yield Batch(first, lines, nbytes)


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


def line_text(raw: bytes, field: str) -> str | BadLine:
    """The ``field`` string of one non-blank JSONL line, or why there is none (the
    BadLine's line number is 0: the caller knows it)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadLine(0, f"invalid UTF-8 at byte {e.start + 1} of the line")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return BadLine(0, f"invalid JSON: {e.msg} (column {e.colno})")
    except RecursionError:
        return BadLine(0, "invalid JSON: nested too deeply")
    if not isinstance(obj, dict):
        return BadLine(0, f"expected a JSON object, got {type(obj).__name__}")
    text = _lookup(obj, field)
    if text is _MISSING:
        have = ", ".join(map(repr, list(obj)[:10])) or "none"
        return BadLine(0, f"no field {field!r} (fields: {have})")
    if not isinstance(text, str):
        return BadLine(0, f"field {field!r} is a {type(text).__name__}, expected a string")
    if may_hold_surrogates(raw) and (reason := unpaired_surrogate(text, field)):
        return BadLine(0, reason)
    return text


def parse_lines(
    lines: Sequence[bytes],
    first_line: int,
    field: str,
    source: str,
    on_bad_line: OnBadLine = "fail",
) -> tuple[list[str], list[BadLine]]:
    """The ``field`` strings (a key or dotted path) of the non-blank lines, and the bad
    lines left out (``on_bad_line="skip"``); with ``"fail"`` a bad line raises."""
    texts: list[str] = []
    bad: list[BadLine] = []
    for lineno, raw in enumerate(lines, first_line):
        if not raw.strip():
            continue
        text = line_text(raw, field)
        if isinstance(text, str):
            texts.append(text)
        elif on_bad_line == "fail":
            raise BadLineError(f"{source}:{lineno}", text.reason)
        else:
            bad.append(BadLine(lineno, text.reason))
    return texts, bad


def iter_jsonl_texts(
    source: Path,
    field: str = "text",
    batch_docs: int = 1024,
    *,
    on_bad_line: OnBadLine = "fail",
    on_skip: Callable[[BadLine], None] | None = None,
) -> Iterator[str]:
    """Stream the ``field`` texts of a JSONL file (blank lines skipped), for one process.

    Skipped bad lines (``on_bad_line="skip"``) are passed to ``on_skip`` as they are met.
    """
    check_on_bad_line(on_bad_line)
    with open_jsonl(source) as f:
        for batch in read_batches(f, batch_docs):
            texts, bad = parse_lines(batch.lines, batch.first_line, field, str(source),
                                     on_bad_line)
            for line in bad if on_skip is not None else ():
                on_skip(line)
            yield from texts
