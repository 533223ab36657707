"""A bounded batch of documents read from one input file, located for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llm_gym.data.line_scan import BadLine

Unit = Literal["line", "row"]


def location(source: str, unit: Unit, number: int) -> str:
    """``file:line`` for JSONL (as editors and compilers write it), ``file: row N`` for a
    table (1-based, counted from the file's first row)."""
    return f"{source}:{number}" if unit == "line" else f"{source}: row {number}"


@dataclass(frozen=True)
class TextBatch:
    """Either raw JSONL ``lines`` (parsed where they are tokenized, so JSON parsing runs in
    the worker processes) or ready ``texts`` (a table's column). ``first`` is the 1-based
    number of the first line or row; ``nbytes`` the bytes of the file on disk this batch
    moved the reader on (for progress); ``bad`` the rows the reader already left out."""

    source: str
    unit: Unit
    first: int
    nbytes: int
    lines: list[bytes] | None = None
    texts: list[str] | None = None
    bad: list[BadLine] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Lines or rows in the batch, bad ones included."""
        return len(self.lines) if self.lines is not None else len(self.texts or ()) + len(self.bad)
