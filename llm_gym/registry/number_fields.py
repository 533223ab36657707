"""Where a field that expects a number was given a boolean (``seed: true``).

Pydantic reads ``true`` as 1 for an ``int`` or ``float`` field, so a recipe with a boolean
where a number belongs would run with 1 without a word. ``booleans_for_numbers`` walks a
value along its field's annotation (``Optional``, ``Annotated``, unions, lists, tuples,
dicts) and names every boolean that only a number type would accept; a field that takes
booleans (``bool``, ``Any``, ``Literal[True]``) keeps them.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

_SEQUENCES = (list, tuple, set, frozenset, Sequence)


def booleans_for_numbers(annotation: Any, value: Any,
                         loc: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...],
                                                                              bool]]:
    """``(loc, value)`` of every boolean in ``value`` where ``annotation`` wants a number."""
    members = _members(annotation)
    if isinstance(value, bool):
        if not any(_takes_bool(m) for m in members) and any(_number(m) for m in members):
            yield loc, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            item_type = _item_type(members, i)
            if item_type is not None:
                yield from booleans_for_numbers(item_type, item, (*loc, i))
    elif isinstance(value, Mapping):
        values = [get_args(m)[1] for m in members
                  if get_origin(m) in (dict, Mapping) and len(get_args(m)) == 2]
        if values:
            for key, item in value.items():
                yield from booleans_for_numbers(_union(values), item, (*loc, key))


def _members(tp: Any) -> list[Any]:
    """The alternatives of ``tp``: Annotated unwrapped, unions flattened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _members(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


def _takes_bool(tp: Any) -> bool:
    if tp is Any or tp is bool or tp is object:
        return True
    if get_origin(tp) is Literal:
        return any(isinstance(a, bool) for a in get_args(tp))
    return False


def _number(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, (int, float)) and not issubclass(tp, bool)


def _item_type(members: list[Any], index: int) -> Any | None:
    found = []
    for member in members:
        origin, args = get_origin(member), get_args(member)
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                found.append(args[0])
            elif index < len(args):
                found.append(args[index])
        elif origin in _SEQUENCES and args:
            found.append(args[0])
    return _union(found) if found else None


def _union(types_: list[Any]) -> Any:
    return types_[0] if len(types_) == 1 else Union[tuple(types_)]  # noqa: UP007
