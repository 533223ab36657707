"""A budget on what OmegaConf interpolation may produce while a recipe is resolved.

Why: the YAML reader bounds a file's nodes after alias expansion, but interpolation
expands again, later and past that bound. ``a0: x``, ``a1: [${a0}, ${a0}, ...]`` ten
levels deep resolves to 10**10 nodes, and ``a1: "${a0}${a0}..."`` to a string of 10**10
characters: a few hundred bytes of recipe or override that take all memory.

How: while ``resolve`` runs, three things are charged to one budget, each before OmegaConf
does the work it measures: every collection copied into the result is charged its
children (so nodes repeated through references are counted as often as they appear);
every value an interpolation hands back (``${key}``, or a resolver's result such as
``${oc.select:key}``) is charged its length if it is a string, which bounds the strings
concatenated from it; and every evaluation counts, as each takes time. Past the budget,
resolution stops with an error naming the key.

The hooks wrap three methods of OmegaConf's containers (``_to_content``,
``_resolve_node_interpolation``, ``_evaluate_custom_resolver``) for the duration of one
resolution; tests/config/test_interpolation_bounds.py fails if they stop being called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import Container, Node
from omegaconf.basecontainer import BaseContainer
from omegaconf.errors import InterpolationResolutionError

from llm_gym.config.yaml_files import MAX_YAML_BYTES, MAX_YAML_NODES

# The resolved recipe may hold as many nodes as the YAML reader lets a file hold, and its
# interpolations produce as many characters as a file may have. Shipped recipes resolve
# to under 100 nodes, with a few short interpolated strings.
MAX_INTERPOLATED_NODES = MAX_YAML_NODES
MAX_INTERPOLATED_CHARS = MAX_YAML_BYTES
# OmegaConf evaluates an interpolation anew each time it is reached, parsing it with
# ANTLR (about a millisecond for ``${oc.select:key}``), so ten levels of ten references
# to short values cost 10**10 evaluations while producing little: count them too.
MAX_INTERPOLATIONS = 2_000

_REFERENCES = ("_resolve_node_interpolation", "_evaluate_custom_resolver")


class InterpolationTooLarge(InterpolationResolutionError):
    """Interpolation produced more than the budget allows (OmegaConf adds the key)."""


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0
        self.evaluations = 0

    def copying(self, container: Any) -> None:
        """``container``'s children are about to be copied into the result."""
        if isinstance(container, Container) and not container._is_none():
            try:
                self.nodes += len(container)
            except Exception:  # a missing or interpolated container: resolved first
                pass
        if self.nodes > MAX_INTERPOLATED_NODES:
            error = InterpolationTooLarge(
                f"refused: interpolation expands the recipe past {MAX_INTERPOLATED_NODES:,}"
                " nodes (references repeating references?)")
            error.full_key = container._get_full_key(None) or "?"
            raise error

    def referenced(self, value: Any) -> None:
        """An interpolation produced ``value`` (a node, or a resolver's plain result)."""
        if isinstance(value, Node) and not isinstance(value, Container):
            value = value._value()
        if isinstance(value, str):
            self.chars += len(value)
        self.evaluations += 1
        if self.evaluations > MAX_INTERPOLATIONS:
            raise InterpolationTooLarge(
                f"refused: more than {MAX_INTERPOLATIONS:,} interpolations evaluated"
                " (references repeating references?)")
        if self.chars > MAX_INTERPOLATED_CHARS:
            raise InterpolationTooLarge(
                f"refused: its interpolations expand to more than {MAX_INTERPOLATED_CHARS:,}"
                " characters (a string repeating references?)")


@contextmanager
def bounded_interpolation() -> Iterator[None]:
    """Within this block, OmegaConf interpolation raises ``InterpolationTooLarge`` past
    the budget. Not for several threads at once: recipes are resolved on one thread."""
    budget = _Budget()
    originals = {name: getattr(Container, name) for name in _REFERENCES}
    to_content = BaseContainer.__dict__["_to_content"]
    for name, original in originals.items():
        setattr(Container, name, _after(original, budget.referenced))
    BaseContainer._to_content = staticmethod(_before(to_content.__func__, budget.copying))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(Container, name, original)
        BaseContainer._to_content = to_content


def _after(method: Callable[..., Any], charge: Callable[[Any], None]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        charge(result)
        return result

    return wrapper


def _before(function: Callable[..., Any], charge: Callable[[Any], None]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(conf: Any, *args: Any, **kwargs: Any) -> Any:
        charge(conf)
        return function(conf, *args, **kwargs)

    return wrapper
