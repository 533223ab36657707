"""A demo corpus of real English prose that every Python install already has.

The docstrings of the standard library and of installed packages (numpy, torch), plus
the language reference that ships in ``pydoc_data`` and torch's ``add_docstr`` reference
text, make a few MB of technical English: enough to train a tiny GPT-2 on a laptop
without downloading anything. Sources are read with ``ast`` and never imported, so a
module with import-time side effects (or one that fails to import) is harmless.

The output is JSONL, one ``{"text": ..., "source": "module.qualname"}`` per line, and is
deterministic: the same files give the same corpus, byte for byte.

A corpus splits into parts by where its documents came from (``write_corpus_part``): the
standard library (``stdlib``) and the packages' docstrings (``packages``), so a recipe can
mix them in proportions of its choosing.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import importlib.util
import json
import os
import re
import sysconfig
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llm_gym.data.file_kinds import JSONL, check_outputs
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, make_parent_dirs

DEFAULT_PACKAGES = ("numpy", "torch")
PARTS = ("stdlib", "packages")  # the parts of a corpus, by scan root
MIN_CHARS = 200  # shorter docstrings are mostly one-liners ("Return the foo.")
MIN_PROSE_FRACTION = 0.7  # letters and whitespace; below that it is code, tables or ASCII art
MIN_STOPWORD_FRACTION = 0.12  # English prose is ~40% function words; symbol lists have few
# Files whose triple-quoted strings are under this share of their bytes are code-heavy:
# parsing them is most of the build time (torch has ~45 MB of source) for little prose.
MIN_DOC_DENSITY = 0.1
SKIP_DIRS = frozenset(
    {"test", "tests", "testing", "idle_test", "__pycache__", "site-packages", "dist-packages"}
)
# Module-level dicts of reference text, one document per value.
REFERENCE_TABLES = {"pydoc_data.topics": "topics"}
# torch and numpy attach the docs of their C functions at import time, e.g.
# add_docstr(torch.abs, "..."): the best reference text they have.
DOCSTRING_SETTERS = frozenset({"add_docstr", "_add_docstr", "add_docstr_all", "add_newdoc"})

_STOPWORDS = frozenset(
    "the a an of to in is are be it that this and or for with as on by not if from at which "
    "when can will returns return".split()
)
_TRIPLE_QUOTED = re.compile(rb'"""(?:.*?)"""|\'\'\'(?:.*?)\'\'\'', re.DOTALL)
_BLANK_RUNS = re.compile(r"\n{3,}")
_SYMBOLS = re.compile(r"[^\w\s]+|[\d_]+")  # anything but letters and whitespace


@dataclass(frozen=True)
class CorpusSummary:
    docs: int
    bytes: int
    seconds: float
    sources: Mapping[str, int]  # documents taken from each source root, in scan order


def write_demo_corpus(
    out: Path,
    *,
    target_mb: float = 8.0,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    stdlib: bool = True,
    progress: bool = False,
) -> CorpusSummary:
    """Write about ``target_mb`` MB of de-duplicated docstring prose to ``out`` as JSONL.

    Scans the standard library first, then ``packages`` in order, in sorted file order,
    and stops once the target is reached (the last document may overshoot it). Packages
    are located without importing them. The file is replaced atomically; an existing
    ``out`` that is another kind of llm_gym file (an index, a tokenizer) is refused.
    """
    if not target_mb > 0:
        raise UserError(f"demo corpus: target_mb must be positive, got {target_mb}")
    start = time.perf_counter()
    out = Path(out)
    check_outputs({out: JSONL}, [])
    target = int(target_mb * 1_000_000)
    roots = _source_roots(packages, stdlib)
    counts = {name: 0 for name, _, _ in roots}
    seen: set[bytes] = set()
    written = 0
    make_parent_dirs(out)
    bar = _Progress(target) if progress else None
    try:
        with _gc_paused(), atomic_output(out, "w", encoding="utf-8", newline="\n") as f:
            for name, text, source in _documents(roots):
                key = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
                line = json.dumps({"text": text, "source": source}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode())
                counts[name] += 1
                if bar is not None:
                    bar.advance(len(line.encode()), name)
                if written >= target:
                    break
    finally:
        if bar is not None:
            bar.close()
    return CorpusSummary(
        docs=sum(counts.values()),
        bytes=out.stat().st_size,
        seconds=time.perf_counter() - start,
        sources=counts,
    )


def write_corpus_part(corpus: Path, out: Path, part: str,
                      packages: Sequence[str] = DEFAULT_PACKAGES) -> int:
    """Write the documents of ``corpus`` that belong to ``part`` to ``out``; return how many.

    ``packages``: the documents whose source is in one of these top-level packages (the
    scan roots of ``write_demo_corpus``, whose sources start with the package's name);
    ``stdlib``: all the others. Lines are copied unchanged, in order, so the two parts
    hold every document of the corpus exactly once.
    """
    if part not in PARTS:
        raise UserError(f"demo corpus: part must be one of {', '.join(PARTS)}, got {part!r}")
    out = Path(out)
    check_outputs({out: JSONL}, [corpus])
    make_parent_dirs(out)
    kept = 0
    with open(corpus, encoding="utf-8") as f, \
            atomic_output(out, "w", encoding="utf-8", newline="\n") as w:
        for number, line in enumerate(f, 1):
            try:
                source = json.loads(line)["source"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{corpus}:{number}: not a demo corpus record "
                                '({"text": ..., "source": ...})') from None
            in_packages = str(source).split(".")[0] in packages
            if in_packages == (part == "packages"):
                w.write(line)
                kept += 1
    return kept


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Parsing allocates millions of AST nodes, each allocation counting toward the cyclic
    # collector's thresholds; in a process that already holds torch's large heap, those
    # collections made the build 2-3x slower. AST trees have no cycles: refcounting frees them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _source_roots(packages: Sequence[str], stdlib: bool) -> list[tuple[str, list[Path], str]]:
    """(name, directories or files to scan, module prefix) for each source, in scan order."""
    roots: list[tuple[str, list[Path], str]] = []
    if stdlib:
        roots.append(("stdlib", [Path(sysconfig.get_paths()["stdlib"])], ""))
    for package in packages:
        if "." in package:
            # find_spec of a dotted name imports the parent package; refuse rather than do that.
            raise UserError(f"demo corpus: give top-level package names, not {package!r}")
        # For a top-level name, find_spec only asks the path finders where it lives.
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise UserError(f"demo corpus: package {package!r} is not installed")
        if spec.submodule_search_locations:
            paths = sorted(Path(p) for p in spec.submodule_search_locations)
        elif spec.origin and spec.origin.endswith(".py"):
            paths = [Path(spec.origin)]  # a single-module distribution
        else:
            paths = []  # a compiled extension: no source to read
        roots.append((package, paths, package))
    return roots


def _documents(roots: list[tuple[str, list[Path], str]]) -> Iterator[tuple[str, str, str]]:
    """(root name, text, source) for every prose document, in a deterministic order."""
    for name, paths, prefix in roots:
        for path in paths:
            for file in _python_files(path):
                module = prefix if file == path else _module_name(file.relative_to(path), prefix)
                for qualname, text in _file_documents(file, module):
                    text = _tidy(text)
                    if _is_prose(text):
                        yield name, text, qualname


def _python_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        # Sorting in place fixes os.walk's order, which the file system otherwise decides.
        # Names with "-" or a leading "." (lib-dynload, .git) are not importable packages.
        # Public packages first: their docs are the edited API reference, while private
        # internals (torch._inductor) hold developer notes, reached only for large targets.
        dirnames[:] = sorted(
            (d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and "-" not in d),
            key=lambda d: (d.startswith("_"), d),
        )
        for filename in sorted(filenames):
            if filename.endswith(".py") and not _is_test_file(filename):
                yield Path(dirpath, filename)


def _is_test_file(filename: str) -> bool:
    return (
        filename.startswith("test_") or filename.endswith("_test.py") or filename == "conftest.py"
    )


def _module_name(relative: Path, prefix: str) -> str:
    parts = [*([prefix] if prefix else []), *relative.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_documents(file: Path, module: str) -> Iterator[tuple[str, str]]:
    if not file.is_file():  # a FIFO named *.py would block the read
        return
    try:
        source = file.read_bytes()
    except OSError:
        return
    if module not in REFERENCE_TABLES and not _dense_enough(source):
        return
    try:
        with warnings.catch_warnings():
            # Old escape sequences ("\d") in third-party docstrings warn on parse; not ours to fix.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(file))
    except (SyntaxError, ValueError, RecursionError):
        return  # source for another Python version, or not Python at all
    if module in REFERENCE_TABLES:
        yield from _reference_table(tree, module, REFERENCE_TABLES[module])
    yield from _docstrings(tree, module)
    yield from _set_docstrings(tree, module)


def _dense_enough(source: bytes) -> bool:
    quoted = sum(len(m.group(0)) for m in _TRIPLE_QUOTED.finditer(source))
    return quoted >= MIN_CHARS and quoted >= MIN_DOC_DENSITY * len(source)


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield qualname, doc
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # Function bodies hold most of the statements and almost no documented API (closures
        # and local helpers): skipping them halves the walk, which otherwise rivals the parse.
        return
    for child in _child_statements(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings(child, f"{qualname}.{child.name}")
        else:
            yield from _docstrings(child, qualname)  # if/try/with blocks: same scope


def _child_statements(node: ast.AST) -> Iterator[ast.stmt]:
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, field, ()):
            if isinstance(child, ast.stmt):
                yield child
            elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                yield from child.body


def _reference_table(tree: ast.Module, module: str, variable: str) -> Iterator[tuple[str, str]]:
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == variable for t in stmt.targets)
            and isinstance(stmt.value, ast.Dict)
        ):
            for key, value in zip(stmt.value.keys, stmt.value.values, strict=True):
                if _is_str(key) and _is_str(value):
                    yield f"{module}.{key.value}", value.value


def _set_docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """Docs attached at import time: ``add_docstr(torch.abs, "...")``,
    ``add_newdoc("numpy._core", "flatiter", ("base", "..."))``."""
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and call.args and _callee(call) in DOCSTRING_SETTERS):
            continue
        *where, doc = call.args
        if isinstance(doc, ast.Tuple) and len(doc.elts) == 2:  # (attribute, doc)
            where, doc = [*where, doc.elts[0]], doc.elts[1]
        # Docs built with "...".format(**common_args) are templates; only literal text is prose.
        if not _is_str(doc):
            continue
        names = [w.value if _is_str(w) else ast.unparse(w) for w in where]
        # add_docstr(torch.abs, ...) names its target in full; add_docstr_all("abs", ...)
        # names it relative to the module.
        if not names or names[0].split(".")[0] != module.split(".")[0]:
            names = [module, *names]
        yield ".".join(names), doc.value


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _is_str(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.strip().splitlines())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines))


def _is_prose(text: str) -> bool:
    if len(text) < MIN_CHARS:
        return False
    symbols = len(text) - len(_SYMBOLS.sub("", text))
    if symbols > (1 - MIN_PROSE_FRACTION) * len(text):
        return False
    words = text.lower().split()
    return sum(w in _STOPWORDS for w in words) >= MIN_STOPWORD_FRACTION * len(words)


class _Progress:
    """A rich progress bar over bytes written; rich is imported only when asked for."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("demo corpus: {task.description}"), BarColumn(), DownloadColumn()
        )
        self._task = self._progress.add_task("", total=total)
        self._progress.start()

    def advance(self, nbytes: int, source: str) -> None:
        self._progress.update(self._task, advance=nbytes, description=source)

    def close(self) -> None:
        self._progress.stop()
