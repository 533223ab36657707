"""TextPerplexity: loss, perplexity and bits per byte on a JSONL file of texts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from llm_gym.evaluation.perplexity import TextPerplexity
from llm_gym.evaluation.task_files import read_texts
from llm_gym.registry import component
from llm_gym.runner.distributed import World
from llm_gym_components.evaluators.common import EvaluatorConfig, file_problems


@component("evaluator", "TextPerplexity", version=1)
class TextPerplexityConfig(EvaluatorConfig):
    """Every token of every text scored once, tokenised on the fly with the run's
    tokenizer; bits per byte compares runs with different tokenizers."""

    name: str = Field("text", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the records' key: eval/<name>/<metric> in metrics.jsonl")
    path: str = Field(description="JSONL file, one text per line")
    field: str = Field("text", description="the key of the text in each line's object")
    limit: PositiveInt | None = Field(None, description="score only the first N texts")
    batch_size: PositiveInt = Field(8, description="windows of max_seq_len per forward pass")

    def _read(self) -> list[str]:
        return read_texts(Path(self.path).expanduser(), self.field, self.limit)

    def preflight(self) -> Iterator[str]:
        """The file parses and every line has the text field."""
        return file_problems(self._read, "path")

    def build(self, tokenizer: Any, world: World) -> TextPerplexity:
        return TextPerplexity(self._read(), tokenizer, world, self.batch_size)
