"""A pydantic ValidationError as short lines: YAML path, what was expected, what was given."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_MISSING = object()


def yaml_path(loc: tuple[Any, ...], data: Any) -> str:
    """The dotted path of ``loc`` in the user's data.

    Pydantic's ``loc`` also holds union tags and validator names; keeping only the
    elements that index into the data itself leaves the path the user wrote.
    """
    parts: list[str] = []
    node: Any = data
    for i, element in enumerate(loc):
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif isinstance(node, list) and isinstance(element, int) and element < len(node):
            node = node[element]
        elif i == len(loc) - 1 and isinstance(element, str) and isinstance(node, dict):
            node = _MISSING  # a missing key: it isn't in the data, but it is the place
        else:
            continue
        parts.append(f"[{element}]" if isinstance(element, int) else str(element))
    return ".".join(parts).replace(".[", "[") or "(top level)"


def describe_errors(exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        path = yaml_path(tuple(error["loc"]), data)
        kind = error["type"]
        if kind == "missing" and error["loc"] and isinstance(error["loc"][-1], int):
            lines.append(f"{path}: too few items (item [{error['loc'][-1]}] is missing)")
        elif kind == "missing":
            lines.append(f"{path}: required, but missing")
        elif kind == "extra_forbidden":
            lines.append(f"{path}: unexpected key")
        elif kind in ("unknown_component", "missing_type_hint"):
            lines.append(f"{path}: {error['msg']}")
        else:
            lines.append(f"{path}: {_lower_first(error['msg'])} (got {_show(error.get('input'))})")
    return list(dict.fromkeys(lines))  # unions can repeat a finding


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
