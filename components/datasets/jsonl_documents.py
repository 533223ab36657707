"""Documents of a JSONL file by index (``MemMapDataset``), for tools and custom pipelines.

Not a training slot of the runner, which reads packed token blocks; a recipe may still
declare one under the key ``documents`` and a component may ask for it by that name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llm_gym.data.jsonl_dataset import MemMapDataset
from llm_gym.registry import ComponentConfig, component


@component("documents", "JSONL", version=1)
class JSONLDocumentsConfig(ComponentConfig):
    """Random access to the documents of a JSONL file through its line index."""

    path: str = Field(description="the JSONL file; its index is built beside it if missing")
    field: str = Field("text", description="key or dotted path of the text in each record")
    on_stale: Literal["rebuild", "refuse"] = Field(
        "rebuild", description="what to do when the file changed since it was indexed"
    )

    def preflight(self) -> Iterator[str]:
        """The JSONL file is there and is a regular file (its index may be built later)."""
        path = Path(self.path)
        if not path.exists():
            yield f"path: {path} does not exist"
        elif not path.is_file():
            yield f"path: {path} is not a regular file (a JSONL file of documents)"

    def build(self, tokenizer: Any = None) -> MemMapDataset:
        return MemMapDataset(self.path, tokenizer, self.field, on_stale=self.on_stale)
