"""From what the user typed (``gpt2-tiny@1 trainer.max_steps=10``) to a validated, pinned recipe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.config.loading import load_config_with_sources
from llm_gym.config.recipe_model import RecipeBase, validate_recipe
from llm_gym.config.validation_errors import origin_hint
from llm_gym.errors import UserError
from llm_gym.recipes.catalog import RecipeCatalog, RecipeRef, named_by_metadata
from llm_gym.recipes.pins import NOT_PINNED, Drift, find_drift
from llm_gym.recipes.preflight import check_recipe
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.building import build_order

# What the runner provides to every component besides the recipe's own slots.
RUNNER_PROVIDES = ("world", "trainer")


class DriftError(UserError):
    """The installed components no longer match the recipe's pins."""


@dataclass
class LoadedRecipe:
    ref: RecipeRef
    data: dict[str, Any]  # resolved YAML, before validation
    recipe: RecipeBase
    drift: list[Drift]

    def portable(self) -> ResolvedRecipe:
        """What another process needs to rebuild this recipe without reading a file."""
        return ResolvedRecipe(self.ref, self.data, list(self.drift))


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe already found, resolved (overrides, interpolation) and checked, in plain
    values: picklable, so the launcher hands it to its workers. The validated model is a
    class of the registry's making and does not travel; ``load`` validates the same data
    against the worker's registry (nothing is read again, so nothing can have changed)."""

    ref: RecipeRef
    data: dict[str, Any]
    drift: list[Drift]

    def load(self, registry: ResolverRegistry) -> LoadedRecipe:
        recipe = validate_recipe(self.data, registry, source=str(self.ref.path))
        return LoadedRecipe(self.ref, self.data, recipe, list(self.drift))


def load_recipe(
    spec: str,
    overrides: Sequence[str] = (),
    *,
    registry: ResolverRegistry | None = None,
    recipe_dirs: Sequence[Path] = (),
    allow_drift: bool = False,
    preflight: bool = False,
) -> LoadedRecipe:
    """Find, load and validate a recipe. ``preflight=True`` also runs the static checks
    of ``recipes/preflight.py`` (data files there, vocabulary and sequence length fit),
    which ``recipe validate`` and ``recipe run`` want; ``show``, ``lock``, ``plan`` and
    library callers (a plan before the data exists) do not."""
    registry = registry or ResolverRegistry.from_installed_plugins()
    ref = RecipeCatalog.from_registry(registry, recipe_dirs).resolve(spec)
    loaded = load_config_with_sources(ref.path, overrides)
    data = loaded.data
    recipe = validate_recipe(data, registry, source=str(ref.path),
                             interpolations=loaded.interpolations)
    check_dependencies(recipe, registry, str(ref.path))
    ref = named_by_metadata(ref, recipe.recipe.name, recipe.recipe.version)
    if preflight:
        problems = [line + origin_hint(line.partition(":")[0], loaded.interpolations)
                    for line in check_recipe(recipe, registry)]
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            raise UserError(f"{ref.path}: {len(problems)} {noun} found before training",
                            problems)
    drift = find_drift(recipe, registry)
    # Overrides may swap a component in or out on purpose; a changed component may not.
    fatal = [d for d in drift if d.component_changed or not overrides]
    if fatal == [NOT_PINNED] and not allow_drift:
        raise DriftError(
            f"{ref.path}: the recipe is not pinned yet: run `llm_gym recipe lock {spec}` to "
            "pin the components it uses to the installed ones (or pass --allow-drift)"
        )
    if fatal and not allow_drift:
        raise DriftError(
            f"{ref.path}: the recipe's pins do not match the installed components "
            "(re-pin with `llm_gym recipe lock` after checking, or pass --allow-drift)",
            [str(d) for d in fatal],
        )
    return LoadedRecipe(ref, data, recipe, drift)


def check_dependencies(recipe: RecipeBase, registry: ResolverRegistry, source: str) -> None:
    """Fail now, not mid-launch, on a missing dependency (of a slot or of a component
    nested in it) or a cycle between components."""
    provided = RUNNER_PROVIDES if "trainer" in registry.sections() else ()
    try:
        build_order(recipe.components(), provided)
    except UserError as exc:
        raise type(exc)(f"{source}: {exc.message}", exc.problems) from None
