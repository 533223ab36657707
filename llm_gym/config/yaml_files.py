"""Every YAML the project reads (recipes, overrides, a run's recipe.resolved.yaml) goes
through here, with bounds: a file size, a nesting depth, and a count of nodes after alias
expansion.

Why: ``yaml.safe_load`` expands nothing itself (an alias is a shared reference), but
everything after it does (OmegaConf copies nodes, pydantic validates every element), so a
500-byte "billion laughs" file (``a1: &a1 [*a0, *a0, ...]``, nine levels) becomes 10**9
nodes and gigabytes. And libyaml's composer recurses in C: ``[[[[...]]]]`` 100,000 deep
crashes the interpreter (segmentation fault) before any Python limit applies.

So the text is first scanned as a stream of parser events (iterative, no recursion, no
object built), counting the depth and the expanded size of every anchor, and refused past
the limits, naming the file and line; only then is it composed and constructed, with the
same loader OmegaConf uses (so ``1e-3`` is a float and a duplicate key is an error, as in
``OmegaConf.load``). Recipes are a few hundred nodes; the limits are far above that.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import yaml

from llm_gym.errors import UserError
from llm_gym.fileio import open_input

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # after alias expansion

try:
    _EventLoader: Any = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _EventLoader = yaml.SafeLoader


def _omegaconf_loader() -> Any:
    """OmegaConf's YAML loader, with its own expansion limit off (ours applies, whatever
    OMEGACONF_MAX_YAML_EXPANDED_NODES says); omegaconf 2.3 has no such limit."""
    try:
        from omegaconf._yaml import get_yaml_loader
    except ImportError:  # omegaconf < 2.4
        from omegaconf._utils import get_yaml_loader
    if "max_yaml_expanded_nodes" in inspect.signature(get_yaml_loader).parameters:
        return get_yaml_loader(max_yaml_expanded_nodes=None)
    return get_yaml_loader()


_LOADER = _omegaconf_loader()


class YAMLProblem(UserError):
    """Text that is not YAML, or YAML past the bounds; ``problem`` says which, unlocated."""

    def __init__(self, where: str, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{where}: {problem}")


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text within the bounds; ``source`` names it in errors (a file, a flag)."""
    try:
        _check_bounds(text, source)
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 (OmegaConf's loader is a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise YAMLProblem(where, f"YAML syntax error: {problem}") from None


def read_yaml_file(path: Path, what: str = "YAML file") -> Any:
    """Read and parse one YAML file within the bounds; errors name the file and line.

    Opened through ``fileio.open_input``: a FIFO or a device in a recipe directory (or
    given as the recipe) is refused, never read, which would block or never end."""
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{what} not found: {path}")
    try:
        with open_input(path, f"a {what}") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_YAML_BYTES:
                raise UserError(f"{path}: {size:,} bytes, more than the {MAX_YAML_BYTES:,} a "
                                f"{what} may have; is this the right file?")
            raw = handle.read(MAX_YAML_BYTES + 1)  # it may have grown since the stat
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise UserError(f"{path}: more than the {MAX_YAML_BYTES:,} bytes a {what} may have")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot load: not UTF-8 text (byte {exc.start} is "
                        f"{raw[exc.start]:#04x})") from None
    return parse_yaml(text, str(path))


def _check_bounds(text: str, source: str) -> None:
    """Refuse text nested deeper than MAX_YAML_DEPTH or expanding past MAX_YAML_NODES.

    One pass over the parser's events: each open collection accumulates the expanded size
    of its children; an anchor remembers the size of its node; an alias adds that size.
    """
    if len(text) > MAX_YAML_BYTES:
        raise YAMLProblem(source, f"refused: {len(text):,} characters, more than the "
                          f"{MAX_YAML_BYTES:,} allowed")
    anchors: dict[str, int] = {}
    open_nodes: list[list[Any]] = []  # [anchor or None, expanded size so far]
    total = 0

    def finish(size: int, anchor: str | None, event: Any) -> None:
        nonlocal total
        if anchor is not None:
            anchors[anchor] = size
        if open_nodes:
            open_nodes[-1][1] += size
        else:
            total += size
        if total + sum(node[1] for node in open_nodes) > MAX_YAML_NODES:
            raise _refusal(source, event, f"it expands to more than {MAX_YAML_NODES:,} "
                           "nodes (aliases repeating aliases, a 'billion laughs'?)")

    for event in yaml.parse(text, Loader=_EventLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= MAX_YAML_DEPTH:
                raise _refusal(source, event, f"it nests deeper than {MAX_YAML_DEPTH} levels")
            open_nodes.append([event.anchor, 1])
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            finish(size, anchor, event)
        elif isinstance(event, yaml.ScalarEvent):
            finish(1, event.anchor, event)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                problem = ("an alias refers to the collection that contains it (a recursive "
                           "alias)" if any(n[0] == event.anchor for n in open_nodes)
                           else f"alias *{event.anchor} has no anchor &{event.anchor} before it")
                raise _refusal(source, event, problem)
            finish(anchors[event.anchor], None, event)


def _refusal(source: str, event: Any, problem: str) -> YAMLProblem:
    mark = event.start_mark
    return YAMLProblem(f"{source}:{mark.line + 1}:{mark.column + 1}", f"refused: {problem}")
