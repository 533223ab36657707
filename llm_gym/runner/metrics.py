"""Where metric records go: ``RUN_DIR/metrics.jsonl`` always, and the recipe's loggers.

The trainer talks to one ``Subscribers`` object through ``log_train(record)``,
``log_eval(record)`` and ``close()``, the interface every subscriber has. On rank 0 it
holds the JSONL log (the run's record: resume, ``llm_gym plot`` and the tests read it)
and the loggers named in ``trainer.loggers``, built through the registry (kind
``logger``); other ranks hold none.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output

# What the runner hands a logger's build(), by parameter name: the distributed world,
# the trainer settings, the run directory, the step training starts from (0, or the
# resumed checkpoint's step) and a one-line title such as "gpt2-tiny@1 on 1 x cpu".
LOGGER_PROVIDES = ("world", "trainer", "run_dir", "start_step", "title")


class MetricsSubscriber(Protocol):
    def log_train(self, record: dict[str, Any]) -> None: ...
    def log_eval(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class MetricsLog:
    """Appends records; written by rank 0 only, flushed per record so a crash loses nothing.

    ``resume_step``: the step the run starts from (0 for a fresh start). Records after it
    came from a run that stopped before its next checkpoint (or never wrote one); they
    are dropped, since this run writes those steps again. A torn last line (a full disk,
    a crash mid-write) is dropped too, with a warning. The file is opened without
    following a symbolic link.
    """

    def __init__(self, path: Path, enabled: bool, resume_step: int = 0) -> None:
        self.path = path
        self._file: TextIO | None = None
        if not enabled:
            return
        if path.exists():
            lines, records, torn = _read_lines(path)
            kept = [line for line, record in zip(lines, records, strict=True)
                    if record["step"] <= resume_step]
            if torn or len(kept) < len(lines) or not _ends_with_newline(path):
                with atomic_output(path, "w", encoding="utf-8") as handle:
                    handle.writelines(kept)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UserError(f"{path}: cannot write the run's metrics ({exc.strerror})") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    log_train = log_eval = write

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return True
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A torn last line (the run stopped while writing
    it) is left out with a warning; a bad line elsewhere is an error naming it."""
    return _read_lines(path)[1]


def _read_lines(path: Path) -> tuple[list[str], list[dict[str, Any]], bool]:
    """Each complete line (with its newline), its record, and whether a torn last line
    was left out."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UserError(f"{path}: cannot read the run's metrics ({exc.strerror})") from None
    if not stat.S_ISREG(mode):  # reading a FIFO would wait forever
        raise UserError(f"{path}: not a regular file; cannot read the run's metrics from it")
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        numbered = [(n, line) for n, line in enumerate(handle, 1) if line.strip()]
    lines, records = [], []
    for i, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            lines.append(line if line.endswith("\n") else line + "\n")
            records.append(record)
        elif i == len(numbered) - 1:
            print(f"warning: {path}:{number}: the last line is incomplete (the run stopped "
                  "while writing it); it is left out", file=sys.stderr, flush=True)
            return lines, records, True
        else:
            raise UserError(f"{path}:{number}: not a metrics record (a JSON object with "
                            "an integer step); fix or remove the line")
    return lines, records, False


class Subscribers:
    """Fans records out. ``required`` subscribers (metrics.jsonl) fail the run when they
    fail; an ``optional`` one (a dashboard) is switched off with a warning instead, since
    a TensorBoard hiccup must not end a week-long run."""

    def __init__(
        self,
        required: Sequence[MetricsSubscriber],
        optional: Sequence[tuple[str, MetricsSubscriber]] = (),
        main: bool = True,
    ) -> None:
        self._required = list(required)
        self._optional = list(optional)
        self.main = main
        self._closed = False

    def log_train(self, record: dict[str, Any]) -> None:
        self._each("log_train", record)

    def log_eval(self, record: dict[str, Any]) -> None:
        self._each("log_eval", record)

    def message(self, text: str) -> None:
        """A line for the user (rank 0): through a logger that shows text (the console's
        live panel must print it), else on stdout."""
        if not self.main:
            return
        for _, sub in self._optional:
            if hasattr(sub, "message"):
                sub.message(text)
                return
        print(text, flush=True)

    def close(self) -> None:
        """Close every subscriber once, required ones first (the curve plot reads the
        finished metrics.jsonl); safe to call again."""
        if self._closed:
            return
        self._closed = True
        try:
            for sub in self._required:
                sub.close()
        finally:
            self._each("close")

    def _each(self, method: str, *args: Any) -> None:
        if method != "close":
            for sub in self._required:
                getattr(sub, method)(*args)
        for name, sub in list(self._optional):
            try:
                getattr(sub, method)(*args)
            except Exception as exc:  # a logger's own failure: warn, keep training
                if method != "close":
                    self._optional.remove((name, sub))
                print(f"warning: logger {name} failed in {method}(): "
                      f"{type(exc).__name__}: {exc}" + ("" if method == "close" else
                      "; it is switched off for the rest of the run"),
                      file=sys.stderr, flush=True)


# -- building the recipe's loggers ------------------------------------------------------


def build_loggers(
    choices: Sequence[Any], provided: Mapping[str, Any]
) -> list[tuple[str, MetricsSubscriber]]:
    """Build ``trainer.loggers`` (validated entries; rank 0). If one fails, those already
    built are closed, so no live display is left running."""
    from llm_gym.registry.building import build_choice

    built: list[tuple[str, MetricsSubscriber]] = []
    try:
        for choice in choices:
            built.append((choice.type_hint.name, build_choice(choice, provided)))
    except BaseException:
        Subscribers([], built).close()
        raise
    return built
