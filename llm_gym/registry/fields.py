"""Human-readable rows for a config class's fields (``components show``, docs)."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from llm_gym.registry.nesting import NestedComponent


def describe_fields(config_cls: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    """``(name, type, default, constraints, description)`` for every field."""
    rows = []
    for name, info in config_cls.model_fields.items():
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = _default(info.default_factory())
        else:
            default = _default(info.default) if info.default is not PydanticUndefined else ""
        constraints = ", ".join(_constraint(m) for m in info.metadata if _constraint(m))
        rows.append((name, _field_type(info), default, constraints, info.description or ""))
    return rows


def _default(value: Any) -> str:
    """A default as the reference shows it: its repr, but a nested settings model as the
    mapping a recipe would write (``{dp_replicate: 1, dp_shard: -1, tp: 1}``), not its
    Python repr."""
    if isinstance(value, BaseModel):
        from llm_gym.registry.kinds import yaml_repr

        return yaml_repr(value, limit=None)
    return repr(value)


def _field_type(info: Any) -> str:
    """``list[dataset component]`` for a nested component field, else the type's name."""
    marks = [m for m in info.metadata if isinstance(m, NestedComponent)]
    if marks:  # pydantic keeps a top-level Annotated's markers apart from the annotation
        return f"{marks[0].kind} component"
    return type_name(info.annotation)


def type_name(annotation: Any) -> str:
    """A type as a reader of a recipe wants it: ``list[float > 0]``, ``int > 0 | None``,
    ``list[dataset component]``, ``Literal['cycle', 'stop']``, ``Path`` (no module
    paths, no pydantic internals). The one rendering of ``components show`` and the
    generated docs/recipe-reference.md."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    if origin is Annotated:
        marks = [m for m in args[1:] if isinstance(m, NestedComponent)]
        if marks:
            return f"{marks[0].kind} component"
        bounds = [b for m in args[1:] for b in _bounds(m)]
        inner = type_name(args[0])
        return f"{inner} {', '.join(bounds)}" if bounds else inner
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is Any:
        return "Any"
    name = getattr(annotation, "__name__", None)
    return name if isinstance(name, str) else str(annotation).replace("typing.", "")


def _bounds(meta: Any) -> list[str]:
    """The bounds a type's metadata puts on its values (``> 0``); finite floats are the
    rule (STRICT_MODEL_CONFIG), not a bound, so ``allow_inf_nan`` is left out."""
    if isinstance(meta, FieldInfo):
        return [b for m in meta.metadata for b in _bounds(m)]
    text = _constraint(meta)
    return [text] if text else []


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
            "min_length": "min length", "max_length": "max length", "pattern": "matches"}


def _constraint(meta: Any) -> str:
    parts = []
    for attr, symbol in _SYMBOLS.items():
        value = getattr(meta, attr, None)
        if value is not None:
            parts.append(f"{symbol} {value}")
    return ", ".join(parts)
