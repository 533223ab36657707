"""Reading multiple-choice and text files: both formats, and every bad line named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.evaluation.task_files import read_choice_examples, read_texts


def write_lines(path: Path, *records: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


HELLASWAG = {"ind": 4, "activity_label": "Baking", "ctx": "She mixes the flour and",
             "endings": ["eggs.", "runs away.", "sings.", "drives."], "label": 0}


def test_hellaswag_and_generic_formats_read_alike(tmp_path) -> None:
    hs = write_lines(tmp_path / "hs.jsonl", HELLASWAG, {**HELLASWAG, "label": "2"})
    generic = write_lines(tmp_path / "g.jsonl", {"context": "She mixes the flour and",
                                                 "choices": HELLASWAG["endings"], "answer": 0})
    a, b = read_choice_examples(hs)
    assert (a.context, a.choices, a.answer, a.line) == (HELLASWAG["ctx"],
                                                        tuple(HELLASWAG["endings"]), 0, 1)
    assert b.answer == 2  # the hub's files write labels as strings
    (g,) = read_choice_examples(generic)
    assert (g.context, g.choices, g.answer) == (a.context, a.choices, a.answer)


def test_limit_reads_only_the_first_examples(tmp_path) -> None:
    path = write_lines(tmp_path / "hs.jsonl", *[{**HELLASWAG, "ind": i} for i in range(5)],
                       "not json")
    assert len(read_choice_examples(path, limit=3)) == 3


def test_every_bad_line_is_named_with_file_and_line(tmp_path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl",
        HELLASWAG,
        {k: v for k, v in HELLASWAG.items() if k != "label"},
        {**HELLASWAG, "label": 4},
        {**HELLASWAG, "endings": ["eggs.", " ", "x", "y"]},
        "{not json",
        [1, 2],
    )
    with pytest.raises(UserError) as caught:
        read_choice_examples(path)
    problems = caught.value.problems
    assert caught.value.message == f"{path}: 5 bad line(s) in the multiple-choice file"
    assert problems[0] == f"{path}:2: missing field label (hellaswag format)"
    assert problems[1].startswith(f"{path}:3: label: 4 is out of range for 4 endings")
    assert problems[2].startswith(f"{path}:4: endings[1]: empty choice")
    assert problems[3].startswith(f"{path}:5: not a JSON object")
    assert problems[4] == f"{path}:6: not a JSON object but list"


def test_a_file_in_neither_format_or_not_a_file_is_refused(tmp_path) -> None:
    path = write_lines(tmp_path / "other.jsonl", {"question": "?", "options": []})
    with pytest.raises(UserError, match=r"other.jsonl:1: neither HellaSwag's fields"):
        read_choice_examples(path)
    with pytest.raises(UserError, match="no such file"):
        read_choice_examples(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="not a regular file|directory"):
        read_choice_examples(tmp_path)


def test_texts_skip_empty_ones_and_name_bad_lines(tmp_path) -> None:
    good = write_lines(tmp_path / "t.jsonl", {"text": "one"}, {"text": ""}, {"body": "two"})
    assert read_texts(good, field="text", limit=2) == ["one"]  # the first 2 lines
    with pytest.raises(UserError) as caught:
        read_texts(good)
    assert caught.value.problems == [f"{good}:3: missing field 'text'"]
    with pytest.raises(UserError, match="no non-empty 'text' texts"):
        read_texts(write_lines(tmp_path / "e.jsonl", {"text": ""}))
