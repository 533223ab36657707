"""Building components in dependency order.

A component's ``build`` parameters name what it needs. Each name is satisfied by the
recipe slot of that name (built first) or by what the caller provides (``extra_kwargs``:
the runner's world, device, ...). Missing dependencies and cycles are reported by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any

from llm_gym.errors import UserError
from llm_gym.registry.component import ComponentConfig, ComponentSpec, Dependency, spec_of
from llm_gym.registry.nesting import iter_choices, map_choices


class DependencyError(UserError):
    """A component needs something nobody provides, or components need each other."""


def call_build(spec: ComponentSpec, config: ComponentConfig, available: Mapping[str, Any],
               path: str = "") -> Any:
    """``config.build(...)`` with exactly the dependencies its signature asks for.

    Components in the config's nested fields are built first, bottom-up, from the same
    ``available`` dependencies, and passed in the parameter named like their field.
    """
    kwargs = {d.name: available[d.name] for d in spec.dependencies if d.name in available}
    missing = [d.name for d in spec.dependencies if d.required and d.name not in kwargs]
    if missing:
        raise DependencyError(f"{spec.key} needs {_names(missing)} to build, and none was given")
    if spec.accepts_any_dependency:
        kwargs = {**available, **kwargs}
    for name in spec.nested_fields:
        kwargs[name] = _build_nested(getattr(config, name), f"{path}.config.{name}", available)
    return config.build(**kwargs)


def build_choice(choice: Any, available: Mapping[str, Any], path: str = "") -> Any:
    """Build one validated ``{type_hint, config}`` entry (a slot's or a nested one); a
    UserError it raises (a missing file, a pack of another tokenizer) is named at the
    entry's YAML ``path``."""
    try:
        return call_build(spec_of(choice.type_hint.value), choice.config, available, path)
    except UserError as exc:
        if not path:
            raise
        raise exc.at(path).with_traceback(exc.__traceback__) from None


def _build_nested(value: Any, path: str, available: Mapping[str, Any]) -> Any:
    """``value`` (one component, a list or a mapping of them) built, shape kept."""
    if isinstance(value, (list, tuple)):
        return [_build_nested(item, f"{path}[{i}]", available) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _build_nested(item, f"{path}.{key}", available)
                for key, item in value.items()}
    return map_choices(value, lambda choice: build_choice(choice, available, path))


def needs_of(choice: Any, path: str) -> list[tuple[Dependency, str, ComponentSpec]]:
    """``(dependency, yaml path, spec)`` of every component in ``choice``, nested included:
    a slot holding a mixture needs what its sources need."""
    found = []
    for where, inner in iter_choices(choice, path):
        spec = spec_of(inner.type_hint.value)
        found += [(dep, where, spec) for dep in spec.dependencies]
    return found


def build_order(entries: Mapping[str, Any], provided: Iterable[str]) -> list[str]:
    """The order to build recipe slots in; names what is missing or circular.

    ``entries`` maps a slot to its validated ``{type_hint, config}`` entry (then what its
    nested components need counts too) or to a bare ``ComponentSpec``. Needs no object
    and builds nothing, so a recipe can be checked before a run.
    """
    provided = set(provided)
    graph: dict[str, list[str]] = {}
    for slot, entry in entries.items():
        needs = []
        for dep, where, spec in _needs(entry, slot):
            if dep.name in entries and dep.name != slot:
                needs.append(dep.name)
            elif dep.name not in provided and dep.required:
                raise DependencyError(
                    f"{where} ({spec.key}) needs {dep.name!r}: the recipe has no "
                    f"{dep.name!r} entry and the caller provides none"
                )
        graph[slot] = list(dict.fromkeys(needs))
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        raise DependencyError(
            "components depend on each other in a cycle: " + " -> ".join(cycle)
        ) from None


def _needs(entry: Any, slot: str) -> list[tuple[Dependency, str, ComponentSpec]]:
    if isinstance(entry, ComponentSpec):
        return [(dep, slot, entry) for dep in entry.dependencies]
    return needs_of(entry, slot)


def build_in_order(entries: Mapping[str, Any], provided: Mapping[str, Any]) -> dict[str, Any]:
    """Build every recipe entry ``slot -> {type_hint, config}``; return ``slot -> object``."""
    order = build_order(entries, provided)
    built: dict[str, Any] = {}
    for slot in order:
        # A slot never feeds itself: a dependency named like the slot comes from the caller.
        available = {**provided, **{k: v for k, v in built.items() if k != slot}}
        built[slot] = build_choice(entries[slot], available, slot)
    return built


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
