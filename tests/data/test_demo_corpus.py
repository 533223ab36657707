"""The demo corpus: docstring prose read from source files, never by importing them."""

from __future__ import annotations

import gc
import json
import sys
import textwrap
from pathlib import Path

import pytest

from llm_gym.data import demo_corpus
from llm_gym.data.demo_corpus import write_demo_corpus
from llm_gym.errors import UserError

FAKE = "llm_gym_fake_docs_pkg"

PROSE = (
    "The widget keeps a list of the frames that are waiting to be drawn, and it draws "
    "them in the order in which they arrived. When the list is empty the widget sleeps "
    "until a new frame is added, which is why a caller should not expect an immediate "
    "redraw after it changes the size of the window."
)
OTHER_PROSE = (
    "Resize the widget to the given width and height. The new size takes effect at the "
    "next redraw; if either value is smaller than the minimum size of the widget, it is "
    "raised to that minimum and a warning is written to the log of the application."
)
SYMBOLS = "{[(0x1F, 0x2A), (0x3B, 0x4C)]} -> {{%s}} :: <<== ==>> ;; $$ @@ ## " * 5


def _docstring(text: str, width: int = 80) -> str:
    return '"""' + "\n".join(textwrap.wrap(text, width)) + '\n"""'


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package on sys.path whose import would leave a marker file and then fail."""
    site = tmp_path / "site"
    pkg = site / FAKE
    (pkg / "tests").mkdir(parents=True)
    marker = tmp_path / "imported.marker"
    side_effect = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
    (pkg / "__init__.py").write_text(
        f"{_docstring(PROSE)}\n{side_effect}raise RuntimeError('must not be imported')\n"
    )
    (pkg / "guide.py").write_text(
        f"{_docstring('A module docstring that is far too short.')}\n{side_effect}\n"
        "class Widget:\n"
        # The package docstring again, wrapped differently: a duplicate once whitespace is
        # normalised.
        f"    {_docstring(PROSE, width=60)}\n\n"
        "    def resize(self, width, height):\n"
        f"        {_docstring(OTHER_PROSE)}\n\n"
        "    def noise(self):\n"
        f"        {_docstring(SYMBOLS)}\n\n"
        "add_docstr(Widget.draw, " + _docstring(OTHER_PROSE.replace("Resize", "Draw")) + ")\n"
    )
    (pkg / "broken.py").write_text(f"{_docstring(OTHER_PROSE + ' Broken.')}\ndef oops(:\n")
    (pkg / "tests" / "test_guide.py").write_text(_docstring(OTHER_PROSE + " Tests."))
    monkeypatch.syspath_prepend(str(site))
    return marker


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_package_docstrings_are_read_without_importing_the_package(
    fake_package: Path, tmp_path: Path
) -> None:
    out = tmp_path / "corpus.jsonl"
    summary = write_demo_corpus(out, target_mb=1.0, packages=(FAKE,), stdlib=False)

    assert FAKE not in sys.modules and f"{FAKE}.guide" not in sys.modules
    assert not fake_package.exists()
    docs = _lines(out)
    # Short, symbol-heavy, duplicate, unparsable and test-directory docstrings are all left out.
    assert [d["source"] for d in docs] == [
        FAKE,
        f"{FAKE}.guide.Widget.resize",
        f"{FAKE}.guide.Widget.draw",
    ]
    assert docs[0]["text"] == "\n".join(textwrap.wrap(PROSE, 80))
    assert summary.docs == 3 and summary.sources == {FAKE: 3}
    assert summary.bytes == out.stat().st_size
    assert gc.isenabled()


def test_small_stdlib_corpus_is_english_prose_near_the_target(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "corpus.jsonl"
    summary = write_demo_corpus(out, target_mb=0.2)

    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    docs = [json.loads(line) for line in lines]
    assert summary.docs == len(docs) > 50
    assert summary.sources == {"stdlib": len(docs), "numpy": 0, "torch": 0}
    # The target is reached by the last document and not before.
    assert summary.bytes >= 200_000 > summary.bytes - len(lines[-1].encode())
    assert all(set(d) == {"text", "source"} and len(d["text"]) >= 200 for d in docs)
    normalised = [" ".join(d["text"].split()) for d in docs]
    assert len(set(normalised)) == len(normalised)
    words = " ".join(normalised).lower().split()
    assert sum(w in {"the", "of", "to", "a", "is", "and"} for w in words) > 0.12 * len(words)
    assert sum(w.isalpha() for w in words) > 0.6 * len(words)


def test_same_machine_gives_the_same_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_demo_corpus(a, target_mb=0.2)
    write_demo_corpus(b, target_mb=0.2)
    assert a.read_bytes() == b.read_bytes()


def test_failed_build_leaves_the_previous_file_and_no_temporary(
    fake_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "corpus.jsonl"
    out.write_text("previous\n")
    calls = 0

    def fail_on_second_document(text: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        return True

    monkeypatch.setattr(demo_corpus, "_is_prose", fail_on_second_document)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_demo_corpus(out, packages=(FAKE,), stdlib=False)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "site"]


def test_rebuild_replaces_the_file(fake_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus.jsonl"
    out.write_text("previous\n")
    write_demo_corpus(out, packages=(FAKE,), stdlib=False, progress=True)
    assert len(_lines(out)) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("packages", "message"),
    [(("llm_gym_no_such_package",), "not installed"), (("numpy.linalg",), "top-level")],
)
def test_bad_package_names_are_user_errors(
    tmp_path: Path, packages: tuple[str, ...], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        write_demo_corpus(tmp_path / "c.jsonl", packages=packages)
    assert not (tmp_path / "c.jsonl").exists()


def test_target_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="target_mb"):
        write_demo_corpus(tmp_path / "c.jsonl", target_mb=0)


def test_the_cache_honours_xdg_and_llm_gym_demo_cache(tmp_path: Path, monkeypatch) -> None:
    from llm_gym_components.demo.cache import cache_dir

    monkeypatch.delenv("LLM_GYM_DEMO_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "llm_gym" / "demo"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the spec: ignored
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "llm_gym" / "demo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(None) == tmp_path / "xdg" / "llm_gym" / "demo"
    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(tmp_path / "mine"))
    assert cache_dir(None) == tmp_path / "mine"
    assert cache_dir(str(tmp_path / "recipe")) == tmp_path / "recipe"
    assert (tmp_path / "recipe").is_dir()


def test_a_cache_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    from llm_gym_components.demo.cache import cache_dir

    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match=r"afile/demo: cannot create the demo data cache"):
        cache_dir(str(tmp_path / "afile" / "demo"))
