"""A pydantic ValidationError as short lines: YAML path, what was expected, what was given.

Additions make a line say what to change: an unexpected key gets the closest valid key
at its place ("did you mean 'max_steps'?"), a near miss of a choice (a Literal or enum)
the closest choice, an entry that is no component says what a component entry is, and a
value that came from an interpolation, or sits inside one, names the key it was
interpolated from, which is the one the user can set.
"""

from __future__ import annotations

import ast
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from llm_gym.registry.kinds import closest_name, yaml_repr
from llm_gym.registry.nesting import NestedComponent, active_registry

_MISSING = object()
_REFERENCE = re.compile(r"\$\{([^${}]+)\}")
_LIST_KEYS_UP_TO = 30  # with no close match, list the valid keys when there are few


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
        elif element == "config" and isinstance(node, str):
            node = {}  # the `scheduler: StepLR` shorthand stands for {type_hint, config: {}}
        else:
            continue
        parts.append(f"[{element}]" if isinstance(element, int) else str(element))
    return ".".join(parts).replace(".[", "[") or "(top level)"


def describe_errors(
    exc: ValidationError,
    data: Any,
    model: type[BaseModel] | None = None,
    interpolations: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per problem. ``model`` (the validated class) lets an unexpected key be
    matched against the valid ones; ``interpolations`` (YAML path -> ``${...}``, before
    resolution) lets a bad value name the key it came from."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = yaml_path(loc, data)
        kind = error["type"]
        if kind == "missing" and loc and isinstance(loc[-1], int):
            line = f"{path}: too few items (item [{loc[-1]}] is missing)"
        elif kind == "missing":
            line = f"{path}: required, but missing"
        elif kind == "extra_forbidden":
            line = f"{path}: unexpected key{_key_hint(model, loc)}"
        elif kind == "unknown_component" and error["msg"].startswith("type_hint: "):
            # The name is what is wrong, written out or as the `scheduler: StepLR` shorthand.
            line = f"{path}.type_hint: {error['msg'].removeprefix('type_hint: ')}"
        elif kind in ("unknown_component", "missing_type_hint", "not_a_component"):
            line = f"{path}: {error['msg']}"
        elif kind in ("union_tag_not_found", "union_tag_invalid"):
            # Any other tagged union: pydantic's words name its internals (the tag function).
            line = (f"{path}: not one of the forms this field takes{_tags(error)} "
                    f"(got {_show(error.get('input'))})")
        elif kind in ("literal_error", "enum"):
            line = (f"{path}: {_lower_first(error['msg'])} (got {_show(error.get('input'))})"
                    f"{_choice_hint(error)}")
        elif isinstance(error.get("input"), dict):
            # A check of a whole mapping: its message names the values; repeating them
            # all as "got {...}" only buries it. A `field=value` it suggests gets its path.
            line = f"{path}: {_qualify(_lower_first(error['msg']), path, error['input'])}"
        else:
            line = f"{path}: {_lower_first(error['msg'])} (got {_show(error.get('input'))})"
        lines.append(line + origin_hint(path, interpolations or {}))
    return list(dict.fromkeys(lines))  # unions can repeat a finding


def valid_keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model(s) that hold ``loc[-1]``, walking ``loc`` through
    nested models, lists, dicts and tagged unions (``('optimizer', 'AdamW', 'config',
    'lrr')`` -> AdamW's config fields)."""
    current: list[Any] = [model]
    for element in loc[:-1]:
        leaves = [leaf for tp in current for leaf in _members(tp)]
        tagged = [tp for tp, tags in leaves if element in tags]
        if tagged:  # a union tag in the loc: keep the member it names
            current = tagged
            continue
        following = [nxt for tp, _ in leaves if (nxt := _step(tp, element)) is not None]
        if following:
            current = following
        # else: a validator's name in the loc; it indexes nothing, so stay put
    keys: set[str] = set()
    for member, _ in (leaf for tp in current for leaf in _members(tp)):
        if isinstance(member, type) and issubclass(member, BaseModel):
            keys |= set(member.model_fields)
    return sorted(keys)


def _key_hint(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    known = valid_keys_at(model, loc)
    if not known:
        return ""
    closest = closest_name(loc[-1], known)
    if closest is not None:
        return f"; did you mean {closest!r}?"
    if len(known) <= _LIST_KEYS_UP_TO:
        return f"; valid keys here: {', '.join(known)}"
    return ""


def _choice_hint(error: Any) -> str:
    """``; did you mean 'cycle'?`` for a near miss of a Literal or enum value."""
    given = error.get("input")
    if not isinstance(given, str):
        return ""
    choices = [c for c in _choices(str((error.get("ctx") or {}).get("expected", "")))
               if isinstance(c, str)]
    closest = closest_name(given, choices) if choices else None
    return f"; did you mean {closest!r}?" if closest is not None else ""


_CHOICE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,]+""")


def _choices(expected: str) -> list[Any]:
    """The values of pydantic's ``'a', 'b' or 'c'`` (reprs, joined by ', ' and ' or ')."""
    values = []
    for token in _CHOICE.findall(expected):
        if token == "or":
            continue
        try:
            values.append(ast.literal_eval(token))
        except (ValueError, SyntaxError):
            continue
    return values


def _tags(error: Any) -> str:
    expected = (error.get("ctx") or {}).get("expected_tags")
    return f" (one of {expected})" if expected else ""


def _qualify(message: str, path: str, mapping: dict[Any, Any]) -> str:
    """``warmup_steps=2`` -> ``scheduler.config.warmup_steps=2``, for keys of ``mapping``."""
    def qualified(match: re.Match[str]) -> str:
        key = match[1]
        return f"{path}.{key}=" if key in mapping else match[0]

    return re.sub(r"(?<![\w.$])([A-Za-z_]\w*)=", qualified, message)


def origin_hint(path: str, interpolations: Mapping[str, str]) -> str:
    """Where the values at ``path`` (or inside it) came from, when interpolated; for a
    value inside an interpolated one (``weights[0]`` of ``weights: ${...}``), where its
    nearest interpolated ancestor came from."""
    keys = [key for key in interpolations
            if key == path or key.startswith((f"{path}.", f"{path}["))]
    if not keys:
        keys = [ancestor for ancestor in _ancestors(path) if ancestor in interpolations][:1]
    hints = []
    for key in keys:
        expression = interpolations[key]
        sources = _sources(expression)
        if sources:
            hints.append(f"{key} comes from {expression}: change {' or '.join(sources)}")
    return "; " + "; ".join(hints) if hints else ""


_LAST_PART = re.compile(r"(?:\.[^.\[]+|\[\d+\])$")


def _ancestors(path: str) -> list[str]:
    """``a.b[0].c`` -> ``a.b[0]``, ``a.b``, ``a``: nearest first."""
    found = []
    while (shorter := _LAST_PART.sub("", path, count=1)) != path and shorter:
        found.append(shorter)
        path = shorter
    return found


def _sources(expression: str) -> list[str]:
    """What a user sets to change an interpolated value: keys, environment variables."""
    sources = []
    for reference in _REFERENCE.findall(expression):
        if reference.startswith("oc.env:"):
            variable = reference.removeprefix("oc.env:").split(",")[0].strip()
            sources.append(f"the environment variable {variable}")
        elif ":" not in reference:  # another key (a resolver call is not a key)
            sources.append(reference)
    return list(dict.fromkeys(sources))


def _members(tp: Any) -> list[tuple[Any, frozenset[str]]]:
    """The members of an Annotated / Union / Optional type, with the union tags on each."""
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *metadata = get_args(tp)
        nested = [m.kind for m in metadata if isinstance(m, NestedComponent)]
        registry = active_registry()
        if nested and registry is not None and nested[0] in registry.kinds:
            inner = registry.kind(nested[0]).choice_type  # the union the field validated as
        tags = frozenset(m.tag for m in metadata if isinstance(m, Tag))
        return [(member, tags | more) for member, more in _members(inner)]
    if origin is Union or origin is types.UnionType:
        return [member for arg in get_args(tp) for member in _members(arg)]
    return [(tp, frozenset())]


def _step(tp: Any, element: Any) -> Any | None:
    """The type found at ``element`` inside ``tp``, or None if it does not index ``tp``."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(element) if isinstance(element, str) else None
        if field is None:
            return None
        marks = [m for m in field.metadata if isinstance(m, NestedComponent)]
        # pydantic keeps a top-level Annotated's markers apart from the annotation
        return Annotated[(field.annotation, *marks)] if marks else field.annotation
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(element, int) and origin in (list, set, frozenset) and args:
        return args[0]
    if isinstance(element, int) and origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[element] if element < len(args) else None
    if isinstance(element, str) and origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _show(value: Any) -> str:
    return yaml_repr(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
