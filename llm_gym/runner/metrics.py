"""``RUN_DIR/metrics.jsonl``: one JSON object per logged step, eval records on their own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TextIO

from llm_gym.fileio import atomic_output


class MetricsLog:
    """Appends records; written by rank 0 only, flushed per record so a crash loses nothing.

    ``resume_step``: records after that step came from a run that stopped before its next
    checkpoint; they are dropped, since the resumed run writes those steps again.
    """

    def __init__(self, path: Path, enabled: bool, resume_step: int = 0) -> None:
        self.path = path
        self._file: TextIO | None = None
        if not enabled:
            return
        if resume_step and path.exists():
            kept = [r for r in read_metrics(path) if r["step"] <= resume_step]
            with atomic_output(path, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in kept)
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
