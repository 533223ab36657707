"""``RUN_DIR/metrics.jsonl``: one JSON object per logged step, eval records on their own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TextIO


class MetricsLog:
    """Appends records; written by rank 0 only, flushed per record so a crash loses nothing."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self._file: TextIO | None = path.open("a", encoding="utf-8") if enabled else None

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
