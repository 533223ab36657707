"""One component kind (model, optimizer, ...): its specs and everything derived from them.

From the declared specs a kind derives, and rebuilds whenever a component is added:
its ``LookupEnum``, its class-resolver resolver (type_hint -> config class), and the
pydantic type of a recipe entry ``{type_hint: ..., config: {...}}``, a union of one model
per component discriminated by ``type_hint``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, Union

from class_resolver import ClassResolver
from class_resolver.utils import normalize_string
from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from llm_gym.errors import UserError
from llm_gym.registry.component import STRICT_MODEL_CONFIG, ComponentConfig, ComponentSpec
from llm_gym.registry.lookup import LookupEnum, build_lookup_enum


class ComponentChoice(BaseModel):
    """A validated recipe entry: which component (``type_hint``) and its ``config``."""

    model_config = STRICT_MODEL_CONFIG
    type_hint: Any
    config: Any


class UnknownComponentError(UserError, LookupError):
    """A kind or component name that nobody registered; lists those that exist."""

    def __init__(self, kind: str, given: str, known: list[str]) -> None:
        self.kind, self.given, self.known = kind, given, known
        super().__init__(describe_unknown(kind, given, known))


def describe_unknown(kind: str, given: Any, known: list[str]) -> str:
    """'no scheduler named X; registered: A, B; did you mean A?'"""
    if given is None:
        return f"type_hint is null: name {article(kind)} {kind}; registered: " + (
            ", ".join(known) or "(none)")
    text = f"no {kind} named {yaml_repr(given)}; registered: {', '.join(known) or '(none)'}"
    closest = closest_name(str(given), known) if isinstance(given, str) else None
    return f"{text}; did you mean {closest!r}?" if closest else text


def describe_forms(kind: str, known: list[str]) -> str:
    """What a recipe entry of ``kind`` may be: 'a dataset component: a name (A, B) or
    {type_hint: NAME, config: {...}}'."""
    names = ", ".join(known) or "none registered"
    return (f"{article(kind)} {kind} component: a name ({names}) or "
            "{type_hint: NAME, config: {...}}")


def yaml_repr(value: Any, limit: int | None = 60) -> str:
    """A value as an error shows it, as YAML writes it (flow style): null, true and
    false, at any depth (``[null, true]``, ``{a: 1}``), strings quoted; shortened to
    ``limit`` characters."""
    text = _flow(value)
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def _flow(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, LookupEnum):
        return repr(value.name)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key if isinstance(key, str) else _flow(key)}: "
                               f"{_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, BaseModel):
        return _flow(value.model_dump(mode="json"))
    return repr(value)


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter: 'an evaluator', 'a model')."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def closest_name(given: str, known: list[str]) -> str | None:
    by_normalized = {normalize_string(k): k for k in known}
    match = difflib.get_close_matches(normalize_string(given), list(by_normalized), n=1, cutoff=0.5)
    return by_normalized[match[0]] if match else None


class ComponentResolver(ClassResolver[ComponentConfig]):
    """A class-resolver keyed by the declared component name rather than the class name."""

    def extract_name(self, element: type[ComponentConfig]) -> str:
        return element.__llm_gym_component__.name


class ComponentKind:
    def __init__(self, name: str) -> None:
        self.name = name
        self._specs: dict[str, ComponentSpec] = {}
        self.resolver = ComponentResolver(base=ComponentConfig, base_as_suffix=False)
        self._enum: type[LookupEnum] | None = None
        self._choice_type: Any = None
        self._adapter: TypeAdapter[Any] | None = None

    def add(self, spec: ComponentSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None:
            if existing.config_cls is spec.config_cls:
                return
            raise ValueError(
                f"component {spec.key} is declared twice: by "
                f"{_where(existing.config_cls)} and by {_where(spec.config_cls)}"
            )
        self.resolver.register(spec.config_cls)
        self._specs[spec.name] = spec
        self._enum = self._choice_type = self._adapter = None  # rebuilt on next use

    @property
    def specs(self) -> list[ComponentSpec]:
        return sorted(self._specs.values(), key=lambda s: s.name.lower())

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def spec(self, name: str) -> ComponentSpec:
        """The spec for a name as a user may type it (exact, member name or normalized)."""
        try:
            return self._specs[self.enum(name).name]
        except ValueError:
            raise UnknownComponentError(self.name, name, self.names) from None

    @property
    def enum(self) -> type[LookupEnum]:
        if self._enum is None:
            self._enum = build_lookup_enum(self.name, {s.name: s.config_cls for s in self.specs})
        return self._enum

    @property
    def choice_type(self) -> Any:
        """The pydantic annotation of a recipe entry of this kind."""
        if self._choice_type is None:
            self._choice_type = self._build_choice_type()
        return self._choice_type

    @property
    def adapter(self) -> TypeAdapter[Any]:
        """Validates one entry of this kind (a nested component field uses it)."""
        if self._adapter is None:
            self._adapter = TypeAdapter(self.choice_type)
        return self._adapter

    def _build_choice_type(self) -> Any:
        enum = self.enum
        choices = [
            Annotated[_choice_model(spec, enum[spec.name]), Tag(spec.name)] for spec in self.specs
        ]
        union: Any = Union[tuple(choices)] if len(choices) > 1 else choices[0]  # noqa: UP007
        if len(choices) > 1:
            union = Annotated[union, Discriminator(_type_hint_name)]
        return Annotated[union, BeforeValidator(self._canonical_type_hint),
                         NameShorthandSchema(self.name, tuple(self.names))]

    def _canonical_type_hint(self, value: Any) -> Any:
        """Turn whatever names the component (name, value, any spelling) into its enum member."""
        if isinstance(value, str):  # shorthand: `scheduler: StepLR` when the config has defaults
            value = {"type_hint": value}
        if isinstance(value, BaseModel):
            return value  # an entry validated before (a default, a copy): the model judges it
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "not_a_component", "{message}",
                {"message": f"expected {describe_forms(self.name, self.names)}, "
                            f"got {yaml_repr(value)}"},
            )
        if "type_hint" not in value:
            raise PydanticCustomError(
                "missing_type_hint",
                "missing 'type_hint': which {kind} to use, one of {known}",
                {"kind": self.name, "known": ", ".join(self.names)},
            )
        given = value["type_hint"]
        try:
            member = self.enum(given)
        except (ValueError, TypeError):
            raise PydanticCustomError(
                "unknown_component", "{message}",
                {"message": "type_hint: " + describe_unknown(self.name, given, self.names)},
            ) from None
        return {**value, "type_hint": member}


class NameShorthandSchema:
    """The JSON schema of a recipe entry: ``{type_hint, config}`` or the bare name
    (``loss: CrossEntropy``), which the loader takes in any spelling it resolves
    (``warmup_cosine``): the names for completion, and a pattern for the spellings."""

    def __init__(self, kind: str, names: tuple[str, ...]) -> None:
        self.kind, self.names = kind, names

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        entry = handler(schema)
        if not self.names:
            return entry
        alternatives = "|".join(_spelling_pattern(name) for name in self.names)
        name = {
            "type": "string",
            "description": f"the name of {article(self.kind)} {self.kind} component alone, "
                           "its config all "
                           "defaults; any spelling that ignores case, '-', '_' and spaces",
            "anyOf": [{"enum": list(self.names)},
                      {"pattern": f"^{_SEPARATORS}(?:{alternatives})$"},
                      # or the whole entry interpolated: eval_dataset: ${train_dataset}
                      {"pattern": INTERPOLATION_PATTERN}],
        }
        return {"anyOf": [entry, name]}


_SEPARATORS = "[-_ ]*"
# A value written as an interpolation, resolved by the loader before validation: a number,
# a list, a choice or a whole entry may be `${trainer.seq_len}` or `${oc.env:VAR,default}`.
INTERPOLATION_PATTERN = r"^\$\{.*\}$"


def _spelling_pattern(name: str) -> str:
    """A regex of every spelling ``LookupEnum`` resolves to ``name`` (class_resolver's
    normalize_string: case, '-', '_' and spaces ignored)."""
    parts = []
    for char in normalize_string(name):
        if char.isalpha():
            parts.append(f"[{char.upper()}{char}]" if char.upper() != char else char)
        else:
            parts.append(re.escape(char))
    return "".join(part + _SEPARATORS for part in parts)


def _type_hint_name(value: Any) -> str | None:
    hint = value.get("type_hint") if isinstance(value, dict) else getattr(value, "type_hint", None)
    return hint.name if isinstance(hint, LookupEnum) else None


def _choice_model(spec: ComponentSpec, member: LookupEnum) -> type[ComponentChoice]:
    type_hint = Annotated[
        Literal[member],  # type: ignore[valid-type]
        # The name for completion; any spelling the loader resolves (``warmup_cosine``).
        WithJsonSchema({"type": "string", "anyOf": [
            {"const": spec.name},
            {"pattern": f"^{_SEPARATORS}(?:{_spelling_pattern(spec.name)})$"}],
            "description": spec.doc}),
        PlainSerializer(lambda m: m.name, return_type=str),
    ]
    return create_model(
        re.sub(r"\W", "_", f"{spec.kind}_{spec.name}"),
        __base__=ComponentChoice,
        __doc__=spec.doc or None,
        type_hint=(type_hint, ...),
        config=(spec.config_cls, Field(default_factory=dict, validate_default=True)),
    )


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
