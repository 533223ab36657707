"""The pydantic model of a whole recipe, assembled from the registry after plugins loaded.

Top-level keys: ``recipe`` (description and, for files outside a recipe directory, name
and version), one key per slot (``model: {type_hint, config}``), one per plain section
(``trainer``), and ``pins``. Anything else is an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, PositiveInt, ValidationError, create_model

from llm_gym.config.validation_errors import describe_errors
from llm_gym.errors import UserError
from llm_gym.registry import STRICT_MODEL_CONFIG, ComponentChoice, ResolverRegistry


class RecipeMeta(BaseModel):
    model_config = STRICT_MODEL_CONFIG
    description: str = Field("", description="one line shown by `recipe list`")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="a file outside a recipe dir: its name (default: the file's stem), "
        "shown as NAME@VERSION and in the default run directory; in <name>/v<N>.yaml the "
        "directory's name wins")
    version: PositiveInt | None = Field(
        None, description="a file outside a recipe dir: its version (default 1)")


class Pin(BaseModel):
    """The component a recipe was written against."""

    model_config = STRICT_MODEL_CONFIG
    version: PositiveInt
    fingerprint: str = Field(pattern=r"^[0-9a-f]{12}$")


class RecipeBase(BaseModel):
    model_config = STRICT_MODEL_CONFIG
    recipe: RecipeMeta = Field(default_factory=RecipeMeta)
    pins: dict[str, Pin] = Field(default_factory=dict, description="kind/name -> pin")

    __slot_names__: tuple[str, ...] = ()

    def components(self) -> dict[str, ComponentChoice]:
        """The filled component slots, ``slot -> {type_hint, config}``."""
        return {
            name: getattr(self, name)
            for name in self.__slot_names__
            if getattr(self, name) is not None
        }


def build_recipe_model(registry: ResolverRegistry) -> type[RecipeBase]:
    fields: dict[str, Any] = {}
    for name, section in registry.sections().items():
        fields[name] = (section, Field(default_factory=dict, validate_default=True))
    slot_names = []
    for slot in registry.slots():
        if slot.kind not in registry.kinds:
            continue  # nobody provides this kind: the key is then simply unexpected
        choice = registry.kind(slot.kind).choice_type
        description = slot.doc or f"a {slot.kind} component"
        if slot.required:
            fields[slot.name] = (choice, Field(description=description))
        else:
            fields[slot.name] = (choice | None, Field(None, description=description))
        slot_names.append(slot.name)
    model = create_model("Recipe", __base__=RecipeBase, **fields)
    model.__slot_names__ = tuple(slot_names)
    return model


def validate_recipe(
    data: dict[str, Any],
    registry: ResolverRegistry,
    source: str,
    interpolations: Mapping[str, str] | None = None,
) -> RecipeBase:
    """Validate a resolved recipe dict, reporting every problem with its YAML path.

    ``interpolations`` (YAML path -> ``${...}`` before resolution) lets a problem with an
    interpolated value name the key it came from.
    """
    model = build_recipe_model(registry)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, data, model, interpolations)
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"{source}: {len(problems)} {noun} in the recipe", problems) from None


def recipe_json_schema(registry: ResolverRegistry) -> dict[str, Any]:
    """JSON Schema of the recipe format, for editor completion and validation."""
    schema = build_recipe_model(registry).model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llm_gym recipe",
        **{k: v for k, v in schema.items() if k != "title"},
    }
