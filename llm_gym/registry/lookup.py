"""``LookupEnum``: the enum of one component kind, built from the registry, never by hand."""

from __future__ import annotations

from enum import Enum
from typing import Any

from class_resolver.utils import normalize_string


class LookupEnum(Enum):
    """Members are component names; values are their config classes.

    Constructible by value (the config class) or by member name, as in the original
    LLMgym; names also match case- and separator-insensitively (``step_lr`` -> ``StepLR``).
    """

    @classmethod
    def _missing_(cls, value: Any) -> LookupEnum | None:
        if isinstance(value, str):
            if value in cls.__members__:
                return cls.__members__[value]
            wanted = normalize_string(value)
            for name, member in cls.__members__.items():
                if normalize_string(name) == wanted:
                    return member
        return None


def build_lookup_enum(kind: str, members: dict[str, type]) -> type[LookupEnum]:
    """A fresh enum for ``kind``: an Enum cannot grow, so each registration rebuilds it."""
    class_name = "".join(part.capitalize() for part in kind.replace("-", "_").split("_"))
    enum_cls = LookupEnum(f"{class_name}Types", members)  # type: ignore[call-overload]
    enum_cls.__kind__ = kind
    return enum_cls
