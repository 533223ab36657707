"""Human-readable rows for a config class's fields (``components show``, docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from llm_gym.registry.nesting import NestedComponent, nested_type_name


def describe_fields(config_cls: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    """``(name, type, default, constraints, description)`` for every field."""
    rows = []
    for name, info in config_cls.model_fields.items():
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = repr(info.default_factory())
        else:
            default = repr(info.default) if info.default is not PydanticUndefined else ""
        constraints = ", ".join(_constraint(m) for m in info.metadata if _constraint(m))
        rows.append((name, _field_type(info), default, constraints, info.description or ""))
    return rows


def _field_type(info: Any) -> str:
    """``list[dataset component]`` for a nested component field, else the type's name."""
    marks = [m for m in info.metadata if isinstance(m, NestedComponent)]
    if marks:  # pydantic keeps a top-level Annotated's markers apart from the annotation
        return f"{marks[0].kind} component"
    return nested_type_name(info.annotation) or _type_name(info.annotation)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
            "min_length": "min length", "max_length": "max length", "pattern": "matches"}


def _constraint(meta: Any) -> str:
    parts = []
    for attr, symbol in _SYMBOLS.items():
        value = getattr(meta, attr, None)
        if value is not None:
            parts.append(f"{symbol} {value}")
    return ", ".join(parts)
