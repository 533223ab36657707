"""Declaring components, and how the registry builds them in dependency order."""

from __future__ import annotations

import pytest
from pydantic import Field

from llm_gym.errors import UserError
from llm_gym.registry import ComponentConfig, ResolverRegistry, component
from llm_gym.registry.component import spec_of


def _registry_with(*classes: type) -> ResolverRegistry:
    registry = ResolverRegistry()
    for cls in classes:
        registry.register_component(cls)
    return registry


@component("widget", "Gear", version=2)
class GearConfig(ComponentConfig):
    """A gear with teeth."""

    teeth: int = Field(ge=3)

    def build(self) -> tuple[str, int]:
        return ("gear", self.teeth)


@component("machine", "Clock")
class ClockConfig(ComponentConfig):
    """A clock needs a widget."""

    def build(self, widget: tuple[str, int], label: str = "clock") -> dict:
        return {"widget": widget, "label": label}


def test_decorator_records_kind_name_version_fingerprint_and_dependencies():
    spec = spec_of(GearConfig)
    assert (spec.kind, spec.name, spec.version, spec.key) == ("widget", "Gear", 2, "widget/Gear")
    assert len(spec.fingerprint) == 12
    assert spec.doc == "A gear with teeth."
    clock = spec_of(ClockConfig)
    assert [(d.name, d.required) for d in clock.dependencies] == [
        ("widget", True), ("label", False)]


def test_fingerprint_follows_the_schema_not_the_docs():
    @component("widget", "A")
    class A(ComponentConfig):
        """One doc."""
        size: int = Field(1, description="old words")

        def build(self) -> None: ...

    @component("widget", "A")
    class B(ComponentConfig):
        """Other doc."""
        size: int = Field(1, description="new words")

        def build(self) -> None: ...

    @component("widget", "A")
    class C(ComponentConfig):
        size: int = Field(2)

        def build(self) -> None: ...

    assert spec_of(A).fingerprint == spec_of(B).fingerprint
    assert spec_of(A).fingerprint != spec_of(C).fingerprint


def test_subclass_does_not_inherit_the_declaration():
    class Derived(GearConfig):
        pass

    assert spec_of(Derived) is None


def test_bad_declarations_are_refused():
    with pytest.raises(TypeError, match="build"):
        @component("widget", "NoBuild")
        class NoBuild(ComponentConfig):
            pass
    with pytest.raises(ValueError, match="name"):
        component("widget", "has space")
    with pytest.raises(TypeError):
        component("widget", "Plain")(dict)


def test_a_name_declared_twice_by_different_classes_is_named():
    @component("widget", "Gear")
    class OtherGear(ComponentConfig):
        def build(self) -> None: ...

    with pytest.raises(ValueError, match="declared twice.*GearConfig.*OtherGear"):
        _registry_with(GearConfig, OtherGear)


def test_enum_is_rebuilt_when_a_component_is_added():
    registry = _registry_with(GearConfig)
    assert [m.name for m in registry.enum("widget")] == ["Gear"]

    @component("widget", "Spring")
    class SpringConfig(ComponentConfig):
        def build(self) -> str:
            return "spring"

    registry.register_component(SpringConfig)
    assert [m.name for m in registry.enum("widget")] == ["Gear", "Spring"]


def test_dependencies_are_injected_and_extra_kwargs_reach_the_builder():
    registry = _registry_with(GearConfig, ClockConfig)
    gear = registry.kind("widget").enum["Gear"]
    clock = registry.kind("machine").enum["Clock"]
    from pydantic import TypeAdapter

    entries = {
        "machine": TypeAdapter(registry.kind("machine").choice_type).validate_python(
            {"type_hint": clock.name}),
        "widget": TypeAdapter(registry.kind("widget").choice_type).validate_python(
            {"type_hint": gear.name, "config": {"teeth": 12}}),
    }
    built = registry.build_components(entries, extra_kwargs={"label": "cuckoo"})
    assert built["machine"] == {"widget": ("gear", 12), "label": "cuckoo"}


def test_missing_dependency_is_named():
    registry = _registry_with(ClockConfig)
    from pydantic import TypeAdapter

    entry = TypeAdapter(registry.kind("machine").choice_type).validate_python(
        {"type_hint": "Clock"})
    with pytest.raises(UserError, match="machine \\(machine/Clock\\) needs .widget."):
        registry.build_components({"machine": entry})


def test_dependency_cycle_is_named():
    @component("egg", "Egg")
    class EggConfig(ComponentConfig):
        def build(self, chicken: object) -> str:
            return "egg"

    @component("chicken", "Chicken")
    class ChickenConfig(ComponentConfig):
        def build(self, egg: object) -> str:
            return "chicken"

    registry = _registry_with(EggConfig, ChickenConfig)
    from pydantic import TypeAdapter

    entries = {
        kind: TypeAdapter(registry.kind(kind).choice_type).validate_python({"type_hint": name})
        for kind, name in (("egg", "Egg"), ("chicken", "Chicken"))
    }
    with pytest.raises(UserError, match="cycle: .*(egg -> chicken|chicken -> egg)"):
        registry.build_components(entries)


def test_unknown_kind_and_name_list_what_exists():
    registry = _registry_with(GearConfig)
    with pytest.raises(LookupError, match="registered: widget"):
        registry.kind("widgte")
    with pytest.raises(LookupError, match="did you mean 'Gear'"):
        registry.spec("widget", "Geer")
