"""A pydantic ValidationError as short lines: YAML path, what was expected, what was given.

Additions make a line say what to change: an unexpected key gets the closest valid key
at its place ("did you mean 'max_steps'?"), a near miss of a choice (a Literal or enum)
the closest choice, an entry that is no component says what a component entry is, and a
value that came from an interpolation, or sits inside one, names the key it was
interpolated from, which is the one the user can set.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from llm_gym.registry.component import spec_of
from llm_gym.registry.kinds import ComponentChoice, closest_name, yaml_repr
from llm_gym.registry.nesting import NestedComponent, active_registry

_MISSING = object()
_REFERENCE = re.compile(r"\$\{([^${}]+)\}")
_LIST_KEYS_UP_TO = 30  # with no close match, list the valid keys when there are few


def yaml_path(loc: tuple[Any, ...], data: Any) -> str:
    """The dotted path of ``loc`` in the user's data.

    Pydantic's ``loc`` also holds union tags and validator names; keeping only the
    elements that index into the data itself leaves the path the user wrote.
    """
    return _walk(loc, data)[0]


def _walk(loc: tuple[Any, ...], data: Any) -> tuple[str, bool]:
    """``yaml_path``, and whether ``loc``'s last element was a union branch's label (a
    tag or a validator's name, ``('trainer', 'activation_checkpointing',
    'constrained-int')``) rather than a place in the data."""
    parts: list[str] = []
    node: Any = data
    branch = False
    for i, element in enumerate(loc):
        branch = False
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif isinstance(node, list) and isinstance(element, int) and element < len(node):
            node = node[element]
        elif i == len(loc) - 1 and isinstance(element, str) and isinstance(node, dict):
            node = _MISSING  # a missing key: it isn't in the data, but it is the place
        elif element == "config" and isinstance(node, str | dict):
            # `scheduler: StepLR` (or {type_hint: StepLR} without config:) stands for
            # {type_hint, config: {}}: the config's fields are reported under config.
            node = {}
        else:
            branch = True
            continue
        parts.append(f"[{element}]" if isinstance(element, int) else str(element))
    return ".".join(parts).replace(".[", "[") or "(top level)", branch


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
    sources = interpolations or {}
    for error in _one_per_union(exc.errors(include_url=False), data):
        loc = tuple(error["loc"])
        path = yaml_path(loc, data)
        kind = error["type"]
        message = _message(error)
        # Where the wrong value is, for the note saying where it came from: the value
        # itself (or an interpolated mapping or list it sits in); a key that is
        # unexpected or missing is no value that came from anywhere.
        hint = functools.partial(origin_hint, path, sources)
        if kind == "missing" and loc and isinstance(loc[-1], int):
            line = f"{path}: too few items (item [{loc[-1]}] is missing)" + hint()
        elif kind == "missing":
            line = f"{path}: required, but missing" + hint(itself=False)
        elif kind == "extra_forbidden":
            line = f"{path}: unexpected key{_key_hint(model, loc, path)}" + hint(itself=False)
        elif kind == "unknown_component" and message.startswith("type_hint: "):
            # The name is what is wrong, written out or as the `scheduler: StepLR` shorthand.
            line = f"{path}.type_hint: {message.removeprefix('type_hint: ')}"
            if isinstance(_at(loc, data), dict):
                line += origin_hint(f"{path}.type_hint", sources)
            else:
                line += hint(inside=False)
        elif kind == "missing_type_hint":
            line = f"{path}: {message}" + hint(itself=False)
        elif kind in ("unknown_component", "not_a_component"):
            line = f"{path}: {message}" + hint(inside=False)
        elif kind in ("union_tag_not_found", "union_tag_invalid"):
            # Any other tagged union: pydantic's words name its internals (the tag function).
            line = (f"{path}: not one of the forms this field takes{_tags(error)} "
                    f"(got {_show(error.get('input'))})") + hint(inside=False)
        elif kind in ("model_type", "model_attributes_type", "dataclass_type"):
            # "instance of GPT2Config" names a class; the recipe's word is a mapping.
            line = (f"{path}: expected a mapping of {path} settings (got "
                    f"{_show(error.get('input'))})") + hint(inside=False)
        elif kind in ("literal_error", "enum"):
            line = (f"{path}: {message} (got {_show(error.get('input'))})"
                    f"{_choice_hint(error)}") + hint()
        elif isinstance(error.get("input"), dict):
            # A check of a whole mapping: its message names the values; repeating them
            # all as "got {...}" only buries it. A `field=value` it suggests gets its path.
            line = (f"{path}: {_qualify(message, path, error['input'])}"
                    + hint(inside=functools.partial(_named_in, message)))
        else:
            line = (f"{path}: {message} (got {_show(error.get('input'))})"
                    + hint())
        lines.append(line)
    return list(dict.fromkeys(lines))  # unions can repeat a finding


# pydantic's prefixes of a message raised by a validator (ValueError, assert).
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def _message(error: Any) -> str:
    """pydantic's message, lower-cased to follow a path; a validator's own words as
    written (they may start with a name: "Console is listed twice")."""
    message = str(error["msg"])
    for prefix in _VALIDATOR_PREFIXES:
        if error["type"] in ("value_error", "assertion_error") and message.startswith(prefix):
            return message.removeprefix(prefix)
    return _lower_first(message)


def _at(loc: tuple[Any, ...], data: Any) -> Any:
    """The value ``loc`` points at in ``data`` (tags and validator names skipped)."""
    node = data
    for element in loc:
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif isinstance(node, list) and isinstance(element, int) and element < len(node):
            node = node[element]
    return node


def _named_in(message: str, key: str) -> bool:
    """Whether a message about a mapping names ``key`` (relative to the mapping: the
    first part of ``weights[0]`` or ``sources[1].config.x``)."""
    first = re.split(r"[.\[]", key, maxsplit=1)[0]
    return re.search(rf"(?<![\w.]){re.escape(first)}(?!\w)", message) is not None


# Errors of a union's branch that says the value is of the wrong type for it: another
# branch that took the type and found a bound or a choice wrong says more.
_TYPE_MISMATCH = re.compile(r"_(type|parsing)$|^(literal_error|enum|is_instance_of)$")


def _one_per_union(errors: list[Any], data: Any) -> list[Any]:
    """A value that no member of a union (``Literal['none', 'full'] | PositiveInt``)
    takes gets one error per member from pydantic, at one path; keep the member that fits
    the given type (a string: the choice), or one line naming what each would take."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, error in enumerate(errors):
        path, branch = _walk(tuple(error["loc"]), data)
        if branch and error["type"] not in ("missing", "extra_forbidden"):
            groups.setdefault((path, repr(error.get("input"))), []).append(i)
    drop: set[int] = set()
    replace: dict[int, Any] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        chosen = [errors[i] for i in members]
        given = chosen[0].get("input")
        best = _best_branch(chosen, given)
        if best is None:
            expected = ", or ".join(dict.fromkeys(
                _message(e).removeprefix("Input should be ").removeprefix("input should be ")
                for e in chosen))
            best = {**chosen[0], "type": "union_mismatch", "msg": f"input should be {expected}"}
        replace[members[0]] = best
        drop.update(members[1:])
    return [replace.get(i, error) for i, error in enumerate(errors) if i not in drop]


def _best_branch(errors: list[Any], given: Any) -> Any | None:
    if isinstance(given, str):
        choices = [e for e in errors if e["type"] in ("literal_error", "enum")]
        if choices:
            return choices[0]
    fitting = [e for e in errors if not _TYPE_MISMATCH.search(e["type"])]
    if len(fitting) == 1:
        return fitting[0]
    return None


def valid_keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model(s) that hold ``loc[-1]``, walking ``loc`` through
    nested models, lists, dicts and tagged unions (``('optimizer', 'AdamW', 'config',
    'lrr')`` -> AdamW's config fields)."""
    keys: set[str] = set()
    for member in _models_at(model, loc):
        keys |= set(member.model_fields)
    return sorted(keys)


def _models_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[type[BaseModel]]:
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
    return [member for member, _ in (leaf for tp in current for leaf in _members(tp))
            if isinstance(member, type) and issubclass(member, BaseModel)]


def _key_hint(model: type[BaseModel] | None, loc: tuple[Any, ...], path: str = "") -> str:
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    owner = _setting_of(model, loc)
    if owner is not None:
        # `tokenizer.path` beside type_hint: a setting of the component, one level down.
        parent, _, key = path.rpartition(".")
        return f" here; it is a setting of {owner}: {parent}.config.{key}"
    known = valid_keys_at(model, loc)
    if not known:
        return ""
    closest = closest_name(loc[-1], known)
    if closest is not None:
        return f"; did you mean {closest!r}?"
    if len(known) <= _LIST_KEYS_UP_TO:
        return f"; valid keys here: {', '.join(known)}"
    return ""


def _setting_of(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The component whose config has the field ``loc[-1]``, when ``loc`` puts it beside
    that component's type_hint rather than under its config."""
    for member in _models_at(model, loc):
        if not issubclass(member, ComponentChoice) or "config" not in member.model_fields:
            continue
        config = member.model_fields["config"].annotation
        spec = spec_of(config) if isinstance(config, type) else None
        if spec is not None and loc[-1] in config.model_fields:
            return spec.name
    return None


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


def origin_hint(path: str, interpolations: Mapping[str, str], *, itself: bool = True,
                inside: bool | Callable[[str], bool] = True) -> str:
    """Where the value at ``path`` came from, when interpolated; for a value inside an
    interpolated one (``weights[0]`` of ``weights: ${...}``), where its nearest
    interpolated ancestor came from.

    ``itself=False``: what is wrong at ``path`` is no value (an unexpected or a missing
    key), so only an interpolated ancestor (the mapping it is in) counts. ``inside``: which
    interpolated values inside ``path`` count, by their key relative to it (a check of a
    whole mapping names the values it is about); False: none."""
    keys = [path] if itself and path in interpolations else []
    if itself and inside is not False:
        for key in interpolations:
            if key.startswith((f"{path}.", f"{path}[")):
                relative = key[len(path):].lstrip(".")
                if inside is True or inside(relative):
                    keys.append(key)
    if not keys:
        keys = [ancestor for ancestor in _ancestors(path) if ancestor in interpolations][:1]
    hints = []
    for key in keys:
        expression = interpolations[key]
        sources = _sources(expression)
        if sources:
            hints.append(f"{key} comes from {expression}: {' or '.join(sources)}")
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
            variable, comma, default = reference.removeprefix("oc.env:").partition(",")
            variable = variable.strip()
            if comma and variable not in os.environ:
                sources.append(f"{variable} is not set, so its default {default.strip()} is "
                               f"used: set the environment variable {variable} or change "
                               "the default")
            else:
                sources.append(f"change the environment variable {variable}")
        elif ":" not in reference:  # another key (a resolver call is not a key)
            sources.append(f"change {reference}")
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
