"""Finding recipes by name and version: ``<dir>/<name>/v<version>.yaml``.

Directories come from, in order of precedence: ``--recipe-dir`` options, the
``LLM_GYM_RECIPE_PATH`` environment variable (os.pathsep-separated) and plugins (the
built-in set ships its recipes as package data, so a wheel install finds them too).
A recipe found earlier shadows the same name and version found later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.config.yaml_files import read_yaml_file
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file
from llm_gym.registry.kinds import closest_name

RECIPE_PATH_ENV = "LLM_GYM_RECIPE_PATH"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.ya?ml$")
_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:@v?(?P<version>[0-9]+))?$")


@dataclass(frozen=True)
class RecipeRef:
    name: str
    version: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def description(self) -> str:
        """The recipe's one-line description, read without validating the recipe."""
        try:
            data = read_yaml_file(self.path, what="recipe file")
            return str(((data or {}).get("recipe") or {}).get("description", "")).strip()
        except (UserError, AttributeError):
            return "(unreadable)"


class RecipeCatalog:
    def __init__(self, dirs: Iterable[Any]) -> None:
        self.dirs = [Path(str(d)) for d in dirs]
        self._recipes: dict[str, dict[int, RecipeRef]] = {}
        for directory in self.dirs:
            if not directory.is_dir():
                continue
            for recipe_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
                for file in sorted(recipe_dir.iterdir()):
                    match = _VERSION_FILE.match(file.name)
                    if match:
                        versions = self._recipes.setdefault(recipe_dir.name, {})
                        versions.setdefault(int(match[1]), RecipeRef(
                            recipe_dir.name, int(match[1]), file))

    @classmethod
    def from_registry(cls, registry: Any, extra_dirs: Sequence[Path] = ()) -> RecipeCatalog:
        from_env = [Path(p) for p in os.environ.get(RECIPE_PATH_ENV, "").split(os.pathsep) if p]
        return cls([*extra_dirs, *from_env, *registry.recipe_dirs()])

    def names(self) -> list[str]:
        return sorted(self._recipes)

    def versions(self, name: str) -> list[RecipeRef]:
        return [self._recipes[name][v] for v in sorted(self._recipes.get(name, {}))]

    def resolve(self, spec: str) -> RecipeRef:
        """``NAME`` (newest version), ``NAME@V`` or a path to a recipe file."""
        if _looks_like_path(spec):
            return ref_for_path(Path(spec))
        match = _SPEC.match(spec)
        if not match:
            raise UserError(f"{spec!r} is neither a recipe name (NAME or NAME@V) nor a .yaml file")
        name, version = match["name"], match["version"]
        if name not in self._recipes:
            known = self.names()
            text = f"no recipe named {name!r}; known recipes: {', '.join(known) or '(none)'}"
            closest = closest_name(name, known)
            raise UserError(f"{text}; did you mean {closest!r}?" if closest else text)
        versions = self._recipes[name]
        if version is None:
            return versions[max(versions)]
        if int(version) not in versions:
            have = ", ".join(str(v) for v in sorted(versions))
            raise UserError(f"recipe {name!r} has no version {version}; it has version(s) {have}")
        return versions[int(version)]


def ref_for_path(path: Path) -> RecipeRef:
    """A recipe file given by path; named after its folder when it sits in a recipe dir."""
    if not path.is_file():
        if path.exists():  # a FIFO, a directory...: say what it is instead
            check_input_file(path, "a recipe file")
        raise UserError(f"recipe file not found: {path}")
    match = _VERSION_FILE.match(path.name)
    if match:
        return RecipeRef(path.parent.name, int(match[1]), path)
    return RecipeRef(path.stem, 1, path)


def named_by_metadata(ref: RecipeRef, name: str | None, version: int | None) -> RecipeRef:
    """A file outside a recipe directory takes ``recipe.name`` and ``recipe.version``
    (the run's label and default run directory); in ``<name>/v<N>.yaml`` the place wins."""
    if _VERSION_FILE.match(ref.path.name):
        return ref
    return RecipeRef(name or ref.name, version or ref.version, ref.path)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml")) or os.sep in spec or "/" in spec
