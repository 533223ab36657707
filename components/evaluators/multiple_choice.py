"""MultipleChoice: HellaSwag-style completion accuracy on a local JSONL file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from llm_gym.evaluation.multiple_choice import MultipleChoice, encode_examples
from llm_gym.evaluation.task_files import ChoiceFormat, read_choice_examples
from llm_gym.registry import component
from llm_gym.runner.distributed import World
from llm_gym_components.evaluators.common import EvaluatorConfig, file_problems


@component("evaluator", "MultipleChoice", version=1)
class MultipleChoiceConfig(EvaluatorConfig):
    """acc and acc_norm (per byte of the choice, as lm-evaluation-harness does) of the
    choice with the highest log-probability given the context; all choices of an example
    in one forward pass; examples sharded across data-parallel ranks."""

    name: str = Field("hellaswag", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the records' key: eval/<name>/<metric> in metrics.jsonl")
    path: str = Field(description="JSONL file: HellaSwag's ctx/endings/label per line, or "
                      "context/choices/answer")
    format: ChoiceFormat = Field("auto", description="'auto' picks by the first line's fields")
    limit: PositiveInt | None = Field(None, description="score only the first N examples")
    delimiter: str = Field(" ", description="put between the context and each choice")

    def _read(self) -> Any:
        return read_choice_examples(Path(self.path).expanduser(), self.format, self.limit)

    def preflight(self) -> Iterator[str]:
        """The file parses: every field there, labels in range, no empty choice."""
        return file_problems(self._read, "path")

    def build(self, tokenizer: Any, world: World) -> MultipleChoice:
        return MultipleChoice(encode_examples(self._read(), tokenizer, self.delimiter), world)
