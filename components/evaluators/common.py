"""The fields every evaluator config has, and the preflight of a task file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import Field, PositiveInt

from llm_gym.errors import UserError
from llm_gym.evaluation.evaluator import OnError
from llm_gym.registry import ComponentConfig


class EvaluatorConfig(ComponentConfig):
    """Not a component itself: the scheduling fields of one."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the records' key: eval/<name>/<metric> in metrics.jsonl")
    every: PositiveInt = Field(description="steps between evaluations (and the run's last step)")
    on_error: OnError = Field(
        "warn", description="a failure during the run: 'warn' (switch this evaluator off, "
        "keep training) or 'stop' (end the run)")


def file_problems(read: Callable[[], Any], field: str) -> Iterator[str]:
    """``read()``'s UserError, one line per problem, under the config field that named
    the file (recipe validate prints the evaluator's path in front)."""
    try:
        read()
    except UserError as exc:
        yield f"{field}: {exc.message}"
        for problem in exc.problems:
            yield f"{field}: {problem}"
