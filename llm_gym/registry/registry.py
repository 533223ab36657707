"""``ResolverRegistry``: every component kind, filled by pluggy plugins, with the original API.

```python
registry = ResolverRegistry.from_installed_plugins()
optimizer = registry.build_component_by_config(recipe.optimizer, extra_kwargs={"model": model})
scheduler = registry.build_component_by_key_query("scheduler", "StepLR",
                                                  {"step_size": 10, "gamma": 0.5,
                                                   "optimizer": optimizer})
```
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import pluggy
from class_resolver import ClassResolver

from llm_gym.registry.building import build_in_order, call_build
from llm_gym.registry.component import ComponentConfig, ComponentSpec, spec_of
from llm_gym.registry.hookspecs import Slot
from llm_gym.registry.kinds import ComponentChoice, ComponentKind, UnknownComponentError
from llm_gym.registry.lookup import LookupEnum
from llm_gym.registry.nesting import nested_field_kinds, registry_active
from llm_gym.registry.plugins import (
    CORE_ENTRY_POINT_GROUP,
    PluginLoadError,
    call_each,
    load_entry_point_plugins,
    new_plugin_manager,
)


class ResolverRegistry:
    def __init__(
        self,
        plugin_manager: pluggy.PluginManager | None = None,
        origins: dict[str, str] | None = None,
    ) -> None:
        self.plugin_manager = plugin_manager or new_plugin_manager()
        self._origins = dict(origins or {})  # plugin name -> where it came from, for errors
        self._kinds: dict[str, ComponentKind] = {}
        self._resolvers: dict[str, ClassResolver[Any]] = {}
        self._collect()

    @classmethod
    def from_installed_plugins(cls) -> ResolverRegistry:
        """The application's core plugin (entry point group ``llm_gym.core``) plus every
        installed ``llm_gym`` entry point."""
        manager = new_plugin_manager()
        origins = load_entry_point_plugins(manager, CORE_ENTRY_POINT_GROUP)
        if not origins:
            raise PluginLoadError(
                "llm_gym's core plugin is not installed (no entry point in the group "
                f"{CORE_ENTRY_POINT_GROUP!r}): install the package (pip install -e .) "
                "rather than running it from a source tree")
        return cls(manager, {**origins, **load_entry_point_plugins(manager)})

    # -- filling -------------------------------------------------------------------------

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module in-process (tests, notebooks)."""
        self.plugin_manager.register(plugin, name=name)
        self._collect()

    def register_component(self, config_cls: type[ComponentConfig]) -> None:
        spec = spec_of(config_cls)
        if spec is None:
            raise TypeError(f"{config_cls!r} is not declared with @component")
        self._kinds.setdefault(spec.kind, ComponentKind(spec.kind)).add(spec)

    def _collect(self) -> None:
        for _, classes in self._call("llm_gym_components"):
            for config_cls in classes:
                self.register_component(config_cls)

    def _call(self, hook_name: str) -> list[tuple[str, Any]]:
        return call_each(self.plugin_manager, hook_name, self._origins)

    def active(self) -> AbstractContextManager[None]:
        """Within it, nested component fields (``Component[kind]``) validate against this
        registry: ``with registry.active(): Model.model_validate(data)``."""
        return registry_active(self)

    # -- looking up ----------------------------------------------------------------------

    @property
    def kinds(self) -> dict[str, ComponentKind]:
        return dict(sorted(self._kinds.items()))

    def kind(self, name: str) -> ComponentKind:
        if name not in self._kinds:
            raise UnknownComponentError("component kind", name, sorted(self._kinds))
        return self._kinds[name]

    def spec(self, kind: str, name: str) -> ComponentSpec:
        return self.kind(kind).spec(name)

    def enum(self, kind: str) -> type[LookupEnum]:
        return self.kind(kind).enum

    def slots(self) -> list[Slot]:
        """Declared slots of known kinds, then one optional slot per kind not yet covered."""
        slots: dict[str, Slot] = {}
        for _, contributed in self._call("llm_gym_recipe_slots"):
            for slot in contributed:
                slots.setdefault(slot.name, slot)
        # A kind that a section or a component of another kind holds in a nested field
        # (trainer.loggers) is chosen there: it gets no slot of its own.
        covered = {s.kind for s in slots.values()}
        covered |= {k for section in self.sections().values()
                    for kinds in nested_field_kinds(section).values() for k in kinds}
        covered |= {k for kind in self._kinds.values() for spec in kind.specs
                    for kinds in spec.nested_fields.values() for k in kinds
                    if k != spec.kind}  # a kind holding its own (a chain) keeps its slot
        for kind in self._kinds:
            if kind not in covered and kind not in slots:
                slots[kind] = Slot(kind, kind)
        return list(slots.values())

    def sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {}
        for _, contributed in self._call("llm_gym_recipe_sections"):
            sections.update(contributed)
        return sections

    def recipe_checks(self) -> list[tuple[str, Any]]:
        """``(plugin name, check)`` for every cross-slot recipe check plugins declare."""
        return [(plugin, check) for plugin, checks in self._call("llm_gym_recipe_checks")
                for check in checks]

    def recipe_dirs(self) -> list[Any]:
        return [d for _, dirs in self._call("llm_gym_recipe_dirs") for d in dirs]

    # -- building: the original LLMgym API ---------------------------------------------

    def add_resolver(self, resolver_key: str, resolver: ClassResolver[Any]) -> None:
        """Make any class-resolver reachable through ``build_component_by_key_query``."""
        self._resolvers[resolver_key] = resolver

    def build_component_by_key_query(
        self, register_key: str, type_hint: str, extra_kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        """Build ``type_hint`` of kind ``register_key`` from raw keyword arguments.

        For a component kind, the arguments that are config fields are validated into its
        config (class-resolver instantiates the config class); the rest are dependencies.
        """
        kwargs = dict(extra_kwargs or {})
        if register_key in self._resolvers:
            return self._resolvers[register_key].make(type_hint, kwargs)
        kind = self.kind(register_key)
        spec = kind.spec(type_hint)
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in spec.config_cls.model_fields}
        with self.active():  # nested component fields validate against this registry
            config = kind.resolver.make(spec.name, fields)
        return self._build(spec, config, kwargs)

    def build_component_by_config(
        self, config: ComponentChoice, extra_kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        """Build a validated recipe entry; ``extra_kwargs`` supply its dependencies."""
        if not isinstance(config, ComponentChoice):
            raise TypeError(f"expected a validated {{type_hint, config}} entry, got {config!r}")
        spec = spec_of(config.type_hint.value)
        return self._build(spec, config.config, dict(extra_kwargs or {}))

    def build_components(
        self, entries: Mapping[str, ComponentChoice], extra_kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Build several recipe entries, each getting the ones it depends on injected."""
        return build_in_order(dict(entries), dict(extra_kwargs or {}))

    def _build(self, spec: ComponentSpec, config: ComponentConfig, given: dict[str, Any]) -> Any:
        accepted = {d.name for d in spec.dependencies}
        unexpected = sorted(set(given) - accepted)
        if unexpected and not spec.accepts_any_dependency:
            raise TypeError(
                f"{spec.key}.build() takes {sorted(accepted) or 'no dependencies'}, "
                f"not {unexpected}"
            )
        return call_build(spec, config, given)

