"""Components inside components: a config field typed ``Component["kind"]``.

```python
Dataset = Component["dataset"]  # an alias keeps linters from reading "dataset" as a type

@component("dataset", "Mixture", version=1)
class MixtureConfig(ComponentConfig):
    sources: list[Dataset]  # or list[Component["dataset"]]
    weights: list[float]

    def build(self, world: World, sources: list[Dataset]) -> MixtureDataset:
        ...  # `sources` holds the built datasets, built before the mixture
```

Such a field takes what a recipe slot takes (``{type_hint, config}`` or the bare name),
in any container pydantic knows (one, ``| None``, ``list[...]``, ``dict[str, ...]``). A
config class is defined before any plugin loads, so the field cannot know the registered
names: it is validated against the registry that is validating the recipe (the one
``ResolverRegistry.active()`` made current), with that kind's own union, so its errors
carry the full YAML path, the registered names and the closest one, exactly as a slot's.

``build`` takes one parameter per nested field, named like it; the registry builds the
nested components first, bottom-up, with the same dependencies a slot is offered (a
nested dataset gets ``world``, ``trainer``, ``tokenizer``, ...), and passes them in the
same shape. The field's JSON schema is a placeholder ``{"x-llm-gym-component": kind}``:
a component's fingerprint says which kind it holds, not which components happen to be
registered; ``recipe schema`` replaces it with the kind's union.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from llm_gym.registry.registry import ResolverRegistry

# The JSON-schema key of a nested component's placeholder.
COMPONENT_SCHEMA_KEY = "x-llm-gym-component"

_ACTIVE: ContextVar[ResolverRegistry | None] = ContextVar("llm_gym_registry", default=None)


@contextmanager
def registry_active(registry: ResolverRegistry) -> Iterator[None]:
    """Make ``registry`` the one nested component fields validate against."""
    token = _ACTIVE.set(registry)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_registry() -> ResolverRegistry | None:
    return _ACTIVE.get()


@dataclass(frozen=True)
class NestedComponent:
    """The marker ``Component[kind]`` puts on a field: validate as a ``kind`` entry."""

    kind: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_plain_validator_function(
            self._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _dump, info_arg=True
            ),
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return {COMPONENT_SCHEMA_KEY: self.kind}

    def _validate(self, value: Any) -> Any:
        from llm_gym.registry.kinds import ComponentChoice

        if isinstance(value, ComponentChoice) and _kind_of(value) == self.kind:
            return value  # already validated (a default, a copy)
        registry = _ACTIVE.get()
        if registry is None:
            raise PydanticCustomError(
                "no_registry",
                "a nested {kind} component is validated against a registry: validate "
                "through ResolverRegistry (validate_recipe, build_component_by_key_query) "
                "or inside `with registry.active():`",
                {"kind": self.kind},
            )
        if self.kind not in registry.kinds:
            raise PydanticCustomError(
                "unknown_component", "{message}",
                {"message": f"no component kind {self.kind!r} is registered, so nothing "
                            f"can fill this field; kinds: {', '.join(registry.kinds)}"},
            )
        # Errors raised here keep their locations, nested under this field's.
        return registry.kind(self.kind).adapter.validate_python(value)


class Component:
    """``Component["dataset"]``: a config field that holds a component of kind dataset."""

    def __class_getitem__(cls, kind: str) -> Any:
        from llm_gym.registry.kinds import ComponentChoice

        if not isinstance(kind, str):
            raise TypeError(f"Component[...] takes a kind name, not {kind!r}")
        return Annotated[ComponentChoice, NestedComponent(kind)]


def _kind_of(choice: Any) -> str | None:
    return getattr(type(choice.type_hint), "__kind__", None)


def _dump(value: Any, info: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode=info.mode, by_alias=info.by_alias,
                                exclude_none=info.exclude_none)
    return value


def nested_kinds(annotation: Any) -> list[str]:
    """The component kinds an annotation holds anywhere inside it (``list[Component[k]]``)."""
    found: list[str] = []
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        found += [m.kind for m in metadata if isinstance(m, NestedComponent)]
        return found + nested_kinds(inner)
    for arg in get_args(annotation):
        found += nested_kinds(arg)
    return found


def nested_field_kinds(config_cls: type[BaseModel]) -> dict[str, list[str]]:
    """``field -> kinds`` for every field of ``config_cls`` that holds components."""
    fields = {}
    for name, info in config_cls.model_fields.items():
        kinds = [m.kind for m in info.metadata if isinstance(m, NestedComponent)]
        kinds += nested_kinds(info.annotation)
        if kinds:
            fields[name] = list(dict.fromkeys(kinds))
    return fields


def iter_choices(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(yaml path, ComponentChoice)`` for every component inside ``value``, at any depth,
    parents before their children (``train_dataset``, ``train_dataset.config.sources[0]``)."""
    from llm_gym.registry.kinds import ComponentChoice

    if isinstance(value, ComponentChoice):
        yield path, value
        yield from iter_choices(value.config, f"{path}.config")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_choices(getattr(value, name), _join(path, name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from iter_choices(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_choices(item, _join(path, str(key)))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def map_choices(value: Any, build: Any) -> Any:
    """``value`` with every ComponentChoice replaced by ``build(choice)``, shape kept."""
    from llm_gym.registry.kinds import ComponentChoice

    if isinstance(value, ComponentChoice):
        return build(value)
    if isinstance(value, (list, tuple)):
        return [map_choices(item, build) for item in value]
    if isinstance(value, dict):
        return {key: map_choices(item, build) for key, item in value.items()}
    return value
