"""The demo corpus in parts (standard library, packages), for mixing them."""

from __future__ import annotations

import json

import pytest

from llm_gym.data.demo_corpus import write_corpus_part
from llm_gym.errors import UserError

SOURCES = ["os.path.join", "numpy.linalg.norm", "json", "torch.nn.Linear", "numpyish.x",
           "pydoc_data.topics.if", "torch"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i}", "source": s}) + "\n"
                            for i, s in enumerate(SOURCES)))
    return path


def test_the_parts_split_the_corpus_by_package(corpus, tmp_path) -> None:
    lines = corpus.read_text().splitlines(keepends=True)
    assert write_corpus_part(corpus, tmp_path / "std.jsonl", "stdlib") == 4
    assert write_corpus_part(corpus, tmp_path / "pkg.jsonl", "packages") == 3
    std, pkg = (tmp_path / "std.jsonl").read_text(), (tmp_path / "pkg.jsonl").read_text()
    # Lines copied unchanged, in order; "numpyish" is not numpy.
    assert std == "".join(lines[i] for i in (0, 2, 4, 5))
    assert pkg == "".join(lines[i] for i in (1, 3, 6))


def test_bad_parts_and_records_are_refused_and_nothing_is_overwritten(corpus, tmp_path) -> None:
    with pytest.raises(UserError, match="part must be one of stdlib, packages, got 'all'"):
        write_corpus_part(corpus, tmp_path / "x.jsonl", "all")
    with pytest.raises(UserError, match="is the input"):
        write_corpus_part(corpus, corpus, "stdlib")
    out = tmp_path / "kept.jsonl"
    out.write_text('{"text": "kept"}\n')
    with corpus.open("a") as f:
        f.write('{"text": "no source"}\n')
    with pytest.raises(UserError, match=r"corpus.jsonl:8: not a demo corpus record"):
        write_corpus_part(corpus, out, "stdlib")
    assert out.read_text() == '{"text": "kept"}\n'
