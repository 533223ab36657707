"""Reading evaluation files: multiple-choice examples and texts, one JSON object a line.

Two multiple-choice formats: HellaSwag's (``ctx``, ``endings``, ``label``; the validation
file as published) and a generic one (``context``, ``choices``, ``answer``). Every problem
names the file and line; up to ``MAX_LISTED`` are listed at once, so a broken file is
fixed in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm_gym.errors import UserError
from llm_gym.fileio import open_input

MAX_LISTED = 10
ChoiceFormat = Literal["auto", "hellaswag", "generic"]
# format -> (context field, choices field, answer field)
FIELDS = {"hellaswag": ("ctx", "endings", "label"), "generic": ("context", "choices", "answer")}


@dataclass(frozen=True)
class ChoiceExample:
    """One question: the context, its candidate continuations and the right one's index."""

    context: str
    choices: tuple[str, ...]
    answer: int
    line: int  # 1-based line in the file, for messages


def _records(path: Path, what: str) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed value, problem)`` for every non-blank line."""
    with open_input(path, what) as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 (byte {exc.start})"
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except ValueError as exc:
                yield number, None, f"not a JSON object ({exc})"


def _raise_if(problems: list[str], path: Path, what: str) -> None:
    if problems:
        more = len(problems) - MAX_LISTED
        listed = problems[:MAX_LISTED] + ([f"... and {more} more"] if more > 0 else [])
        raise UserError(f"{path}: {len(problems)} bad line(s) in {what}", listed)


def detect_format(record: dict[str, Any]) -> str | None:
    for name, (context, choices, _) in FIELDS.items():
        if context in record and choices in record:
            return name
    return None


def read_choice_examples(path: Path, fmt: ChoiceFormat = "auto",
                         limit: int | None = None) -> list[ChoiceExample]:
    """The first ``limit`` examples of ``path`` (all without one); a UserError listing
    every bad line among them (missing field, label out of range, empty choice, ...)."""
    path = Path(path)
    what = "the multiple-choice file"
    examples: list[ChoiceExample] = []
    problems: list[str] = []
    for number, record, problem in _records(path, what):
        if limit is not None and len(examples) + len(problems) >= limit:
            break
        where = f"{path}:{number}"
        if problem is None and not isinstance(record, dict):
            problem = f"not a JSON object but {type(record).__name__}"
        if problem is None:
            fmt = fmt if fmt != "auto" else (detect_format(record) or "auto")
            if fmt == "auto":
                problem = ("neither HellaSwag's fields (ctx, endings, label) nor the generic "
                           "ones (context, choices, answer)")
            else:
                example, problem = _parse_choice(record, fmt, number)
                if example is not None:
                    examples.append(example)
                    continue
        problems.append(f"{where}: {problem}")
    _raise_if(problems, path, what)
    if not examples:
        raise UserError(f"{path}: no examples in {what}")
    return examples


def _parse_choice(record: dict[str, Any], fmt: str, number: int
                  ) -> tuple[ChoiceExample | None, str | None]:
    context_key, choices_key, answer_key = FIELDS[fmt]
    missing = [k for k in (context_key, choices_key, answer_key) if k not in record]
    if missing:
        return None, f"missing field {', '.join(missing)} ({fmt} format)"
    context, choices, answer = record[context_key], record[choices_key], record[answer_key]
    if not isinstance(context, str) or not context.strip():
        return None, f"{context_key}: must be a non-empty string"
    if not isinstance(choices, list) or len(choices) < 2:
        return None, f"{choices_key}: must be a list of at least 2 strings"
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            return None, f"{choices_key}[{i}]: empty choice (each must be a non-empty string)"
    # HellaSwag's files from the Hugging Face hub write the label as a string ("2").
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, int):
        return None, f"{answer_key}: must be an integer index into {choices_key}"
    if not 0 <= answer < len(choices):
        return None, (f"{answer_key}: {answer} is out of range for {len(choices)} "
                      f"{choices_key} (0 to {len(choices) - 1})")
    return ChoiceExample(context, tuple(choices), answer, number), None


def read_texts(path: Path, field: str = "text", limit: int | None = None) -> list[str]:
    """The ``field`` of the first ``limit`` (non-blank) lines of a JSONL file. An empty text is
    skipped (it has no token to score); a missing or non-string field is a bad line."""
    path = Path(path)
    what = "the text file"
    texts: list[str] = []
    problems: list[str] = []
    for seen, (number, record, problem) in enumerate(_records(path, what)):
        if limit is not None and seen >= limit:
            break
        if problem is None and not isinstance(record, dict):
            problem = f"not a JSON object but {type(record).__name__}"
        if problem is None and not isinstance(record.get(field), str):
            problem = (f"missing field {field!r}" if field not in record
                       else f"{field!r} must be a string")
        if problem is None:
            if record[field]:
                texts.append(record[field])
            continue
        problems.append(f"{path}:{number}: {problem}")
    _raise_if(problems, path, what)
    if not texts:
        raise UserError(f"{path}: no non-empty {field!r} texts in {what}")
    return texts
