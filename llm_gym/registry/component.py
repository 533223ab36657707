"""Declaring a component: one decorated pydantic config class that knows how to build its object.

```python
@component("scheduler", "StepLR", version=1)
class StepLRConfig(ComponentConfig):
    '''Decays the learning rate by gamma every step_size steps.'''
    step_size: int = Field(ge=1)
    gamma: float = Field(ge=0.0)

    def build(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        return torch.optim.lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)
```

The decorator only attaches a ``ComponentSpec`` to the class; a plugin hands its classes to
the registry (``collect_components`` finds every decorated class in a package), and the
registry derives the kind's ``LookupEnum``, pydantic union and class-resolver from them.
The parameters of ``build`` (after ``self``) name the components it depends on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from llm_gym.registry.number_fields import booleans_for_numbers

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
# Keys that document a schema without changing what it accepts: editing a description
# must not force every recipe to re-pin.
_COSMETIC_SCHEMA_KEYS = {"description", "title", "examples"}


# The pydantic settings of every model a recipe is validated into (component configs, the
# trainer section, recipe metadata): an unknown key is an error, not silently ignored, and
# so is a non-finite float (`lr: inf`, `.nan`, `1e400`), which would otherwise pass
# validation and end the run later as "loss is nan" without naming the setting. A config
# whose field means something by infinity may set ``allow_inf_nan=True`` in its own
# model_config (or on that field).
STRICT_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def problems_at(
    problems: Iterable[tuple[tuple[str | int, ...], str, Any]], title: str = "config",
) -> ValidationError:
    """One error per ``(loc, message, input)``, ``loc`` relative to the value a validator
    checks: raised from a validator, pydantic puts the field's own location in front, so
    each problem is reported at its full YAML path (``weights[0]``, not ``weights``)."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("invalid_item", "{message}",
                                                  {"message": message}),
                         loc=loc, input=given)
        for loc, message, given in problems
    ])


class StrictModel(BaseModel):
    """Base of every model a recipe is validated into (component configs, the trainer
    section, recipe metadata): ``STRICT_MODEL_CONFIG``, and a boolean is refused where a
    number is expected (pydantic would read ``seed: true`` as 1). Numbers written as
    strings (``"400"``) are still accepted, as everywhere in a recipe."""

    model_config = STRICT_MODEL_CONFIG

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is None:
            return value
        field_info = cls.model_fields.get(info.field_name)
        if field_info is None:
            return value
        found = list(booleans_for_numbers(field_info.annotation, value))
        if found:
            raise problems_at([(loc, "input should be a number, not a boolean", given)
                               for loc, given in found], cls.__name__)
        return value


class ComponentConfig(StrictModel):
    """Base class of every component's config: unknown keys and non-finite floats are errors."""

    model_config = ConfigDict(**STRICT_MODEL_CONFIG, protected_namespaces=())

    def build(self, **dependencies: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define build()")

    def preflight(self, **dependencies: Any) -> Iterable[str]:
        """Cheap checks before anything is built: files exist, headers fit, sizes agree.

        Run by ``recipe validate`` and before ``recipe run`` creates a run directory.
        Parameters name what the check needs, as ``build``'s do, but receive the other
        slots' *configs* (``tokenizer`` is the tokenizer's config) and the recipe's sections
        (``trainer``); a check whose required parameter the recipe lacks is skipped. Yields
        problems as ``"field: message"`` about this config (the slot's path is prepended).
        Stat files and read headers only: never tokenize or read a corpus.
        """
        return ()


@dataclass(frozen=True)
class Dependency:
    """One parameter of a component's ``build``: injected from a built component or the caller."""

    name: str
    required: bool


@dataclass(frozen=True)
class ComponentSpec:
    """What the registry knows about one declared component."""

    kind: str
    name: str
    version: int
    config_cls: type[ComponentConfig]
    accepts_any_dependency: bool = field(default=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def doc(self) -> str:
        """The first paragraph of the config class's docstring, as one line: a summary
        may wrap over several lines, and its first line alone would stop mid-sentence."""
        return first_paragraph(inspect.getdoc(self.config_cls) or "")

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of the config schema: fields, types, defaults and constraints."""
        schema = _strip_cosmetic(self.config_cls.model_json_schema())
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @cached_property
    def nested_fields(self) -> dict[str, list[str]]:
        """``field -> kinds`` of the config fields that hold components (``Component[k]``)."""
        from llm_gym.registry.nesting import nested_field_kinds

        return nested_field_kinds(self.config_cls)

    @cached_property
    def dependencies(self) -> tuple[Dependency, ...]:
        """The named parameters of ``build`` after ``self``, but those a nested component
        field fills (built from the config itself, not injected)."""
        return tuple(d for d in _named_parameters(self.config_cls.build)
                     if d.name not in self.nested_fields)

    @cached_property
    def preflight_dependencies(self) -> tuple[Dependency, ...]:
        """The named parameters of ``preflight`` after ``self``."""
        return _named_parameters(self.config_cls.preflight)


def first_paragraph(text: str) -> str:
    """The lines up to the first blank one, joined by spaces."""
    lines = []
    for line in text.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def _named_parameters(method: Callable[..., Any]) -> tuple[Dependency, ...]:
    params = inspect.signature(method).parameters.values()
    return tuple(
        Dependency(p.name, p.default is inspect.Parameter.empty)
        for p in params
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


ConfigT = TypeVar("ConfigT", bound=type[ComponentConfig])


def component(kind: str, name: str, *, version: int = 1) -> Callable[[ConfigT], ConfigT]:
    """Declare a pydantic config class as the component ``kind/name`` at ``version``.

    Bump ``version`` when the meaning of a config changes without its schema changing;
    schema changes are noticed by the fingerprint anyway.
    """
    for label, value in (("kind", kind), ("name", name)):
        if not _NAME.match(value):
            raise ValueError(f"component {label} {value!r} must start with a letter "
                             "and contain only letters, digits, '_', '-' and '.'")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"component {kind}/{name}: version must be a positive int")

    def declare(cls: ConfigT) -> ConfigT:
        if not (isinstance(cls, type) and issubclass(cls, ComponentConfig)):
            raise TypeError(f"@component({kind!r}, {name!r}) decorates a ComponentConfig "
                            f"subclass, not {cls!r}")
        if cls.build is ComponentConfig.build:
            raise TypeError(f"{cls.__name__} ({kind}/{name}) must define build()")
        accepts_any = any(p.kind is p.VAR_KEYWORD
                          for p in inspect.signature(cls.build).parameters.values())
        spec = ComponentSpec(kind, name, version, cls, accepts_any)
        takes = {d.name for d in _named_parameters(cls.build)}
        unbuilt = [f for f in spec.nested_fields if f not in takes and not accepts_any]
        if unbuilt:
            raise TypeError(
                f"{cls.__name__} ({kind}/{name}): build() must take a parameter per nested "
                f"component field, named like it, to receive the built components: "
                f"{', '.join(unbuilt)}"
            )
        # Stored in the class's own __dict__ so subclasses don't inherit the declaration.
        cls.__llm_gym_component__ = spec
        return cls

    return declare


def spec_of(cls: type) -> ComponentSpec | None:
    """The spec declared on exactly this class (not inherited from a base)."""
    return cls.__dict__.get("__llm_gym_component__")


def collect_components(package: str) -> list[type[ComponentConfig]]:
    """Import ``package`` and all its submodules; return every class declared with @component.

    This is what lets a plugin hold no list of its components: a new file with one
    decorated class is found by the next run.
    """
    root = importlib.import_module(package)
    modules = [root]
    if hasattr(root, "__path__"):
        for info in sorted(pkgutil.walk_packages(root.__path__, prefix=f"{package}."),
                           key=lambda m: m.name):
            modules.append(importlib.import_module(info.name))
    found: list[type[ComponentConfig]] = []
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and spec_of(obj):
                found.append(obj)
    return found


def _strip_cosmetic(node: Any, names: bool = False) -> Any:
    """Drop documentation keys from a JSON schema; ``names`` marks a mapping of field names."""
    if isinstance(node, dict):
        return {
            k: _strip_cosmetic(v, names=k in ("properties", "$defs") and not names)
            for k, v in node.items()
            if names or k not in _COSMETIC_SCHEMA_KEYS
        }
    if isinstance(node, list):
        return [_strip_cosmetic(v) for v in node]
    return node
