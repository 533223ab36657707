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
from llm_gym.registry.component import ComponentConfig, ComponentSpec


class DependencyError(UserError):
    """A component needs something nobody provides, or components need each other."""


def call_build(spec: ComponentSpec, config: ComponentConfig, available: Mapping[str, Any]) -> Any:
    """``config.build(...)`` with exactly the dependencies its signature asks for."""
    kwargs = {d.name: available[d.name] for d in spec.dependencies if d.name in available}
    missing = [d.name for d in spec.dependencies if d.required and d.name not in kwargs]
    if missing:
        raise DependencyError(f"{spec.key} needs {_names(missing)} to build, and none was given")
    if spec.accepts_any_dependency:
        kwargs = {**available, **kwargs}
    return config.build(**kwargs)


def build_order(
    entries: Mapping[str, ComponentSpec], provided: Iterable[str]
) -> list[str]:
    """The order to build recipe slots in; names what is missing or circular.

    Needs no config and builds nothing, so a recipe can be checked before a run.
    """
    provided = set(provided)
    graph: dict[str, list[str]] = {}
    for slot, spec in entries.items():
        needs = []
        for dep in spec.dependencies:
            if dep.name in entries and dep.name != slot:
                needs.append(dep.name)
            elif dep.name not in provided and dep.required:
                raise DependencyError(
                    f"{slot} ({spec.key}) needs {dep.name!r}: the recipe has no "
                    f"{dep.name!r} entry and the caller provides none"
                )
        graph[slot] = needs
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        raise DependencyError(
            "components depend on each other in a cycle: " + " -> ".join(cycle)
        ) from None


def build_in_order(
    entries: Mapping[str, tuple[ComponentSpec, ComponentConfig]],
    provided: Mapping[str, Any],
) -> dict[str, Any]:
    """Build every recipe entry ``slot -> (spec, config)``; return ``slot -> object``."""
    order = build_order({slot: spec for slot, (spec, _) in entries.items()}, provided)
    built: dict[str, Any] = {}
    for slot in order:
        spec, config = entries[slot]
        # A slot never feeds itself: a dependency named like the slot comes from the caller.
        available = {**provided, **{k: v for k, v in built.items() if k != slot}}
        built[slot] = call_build(spec, config, available)
    return built


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
