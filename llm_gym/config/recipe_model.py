"""The pydantic model of a whole recipe, assembled from the registry after plugins loaded.

Top-level keys: ``recipe`` (description and, for files outside a recipe directory, name
and version), one key per slot (``model: {type_hint, config}``), one per plain section
(``trainer``), and ``pins``. Anything else is an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, PositiveInt, RootModel, ValidationError, create_model
from pydantic.json_schema import models_json_schema

from llm_gym.config.validation_errors import describe_errors
from llm_gym.errors import UserError
from llm_gym.registry import ComponentChoice, ResolverRegistry, StrictModel
from llm_gym.registry.kinds import INTERPOLATION_PATTERN, article
from llm_gym.registry.nesting import COMPONENT_SCHEMA_KEY


class RecipeMeta(StrictModel):
    description: str = Field("", description="one line shown by `recipe list`")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="a file outside a recipe dir: its name (default: the file's stem), "
        "shown as NAME@VERSION and in the default run directory; in <name>/v<N>.yaml the "
        "directory's name wins")
    version: PositiveInt | None = Field(
        None, description="a file outside a recipe dir: its version (default 1)")


class Pin(StrictModel):
    """The component a recipe was written against."""

    version: PositiveInt
    fingerprint: str = Field(pattern=r"^[0-9a-f]{12}$")


class RecipeBase(StrictModel):
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
        description = slot.doc or f"{article(slot.kind)} {slot.kind} component"
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
    with registry.active():  # nested components validate, and are described, against it
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = describe_errors(exc, data, model, interpolations)
    noun = "problem" if len(problems) == 1 else "problems"
    raise UserError(f"{source}: {len(problems)} {noun} in the recipe", problems)


def recipe_json_schema(registry: ResolverRegistry) -> dict[str, Any]:
    """JSON Schema of the recipe format, for editor completion and validation.

    A nested component field's placeholder (``{"x-llm-gym-component": kind}``) becomes a
    reference to that kind's union, defined once under ``$defs`` (``component_<kind>``),
    so editors complete nested configs at any depth, recursive ones included.
    """
    kinds = {f"component_{name}": create_model(f"component_{name}", __base__=RootModel[
        kind.choice_type]) for name, kind in registry.kinds.items()}
    models = [(build_recipe_model(registry), "validation")]
    models += [(model, "validation") for model in kinds.values()]
    refs, schema = models_json_schema(models, ref_template="#/$defs/{model}")
    defs = schema.get("$defs", {})
    recipe_ref = refs[models[0]]["$ref"].rsplit("/", 1)[-1]
    recipe = defs.pop(recipe_ref)
    for name, model in kinds.items():
        ref = refs[(model, "validation")]["$ref"].rsplit("/", 1)[-1]
        defs[name] = defs.pop(ref) if ref != name else defs[ref]
        defs[name].pop("title", None)
    schema = _take_interpolations(_link_components({**recipe, "$defs": defs}), root=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llm_gym recipe",
        **{k: v for k, v in schema.items() if k != "title"},
    }


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SCHEMA_ONE = ("additionalProperties", "items", "not", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_OTHER_TYPES = ("integer", "number", "boolean", "array", "object")
_STRING_CONSTRAINTS = ("enum", "const", "pattern", "format", "minLength", "maxLength")
_ANNOTATIONS = ("title", "description", "default")


def _take_interpolations(node: Any, root: bool = False) -> Any:
    """Every schema that takes no arbitrary string (a number, a boolean, a list, a
    mapping, a choice) takes an interpolation too: the file holds ``${...}`` there, which
    the loader resolves before validating. A number, boolean, list or mapping becomes
    ``type: [its type, string]`` with ``pattern`` (which only strings obey), so its
    shape stays where editors and tests look for it; a choice becomes ``anyOf``. A
    component entry's own mapping is left as it is (its ``type_hint`` tells the
    alternatives apart); the kind's union takes a whole entry as an interpolation
    (``NameShorthandSchema``)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _take_interpolations(item) for name, item in value.items()}
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = _take_interpolations(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_take_interpolations(item) for item in value]
        else:
            out[key] = value
    kind = out.get("type")
    if root or "type_hint" in out.get("properties", {}):
        return out
    if kind in _OTHER_TYPES and "pattern" not in out:
        return {**out, "type": [kind, "string"], "pattern": INTERPOLATION_PATTERN}
    # (an untyped fragment, {const: GPT2} in a type_hint's anyOf, is its parent's part)
    if kind == "string" and any(k in out for k in _STRING_CONSTRAINTS):
        outer = {key: out.pop(key) for key in _ANNOTATIONS if key in out}
        return {**outer, "anyOf": [out, {"type": "string", "pattern": INTERPOLATION_PATTERN}]}
    return out


def _link_components(node: Any) -> Any:
    if isinstance(node, dict):
        if COMPONENT_SCHEMA_KEY in node:
            extra = {k: v for k, v in node.items() if k != COMPONENT_SCHEMA_KEY}
            return {"$ref": f"#/$defs/component_{node[COMPONENT_SCHEMA_KEY]}", **extra}
        return {k: _link_components(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_link_components(v) for v in node]
    return node
