"""The pluggy hooks through which packages contribute to llm_gym.

A plugin is a module named by an entry point in the ``llm_gym`` group
(``[project.entry-points.llm_gym] my_plugin = "my_package"``) that implements any of
these hooks with ``@hookimpl``. The built-in component set is such a plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PROJECT = "llm_gym"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class Slot:
    """A top-level recipe key that holds one component of ``kind``.

    Usually the slot is named after its kind (``optimizer``); a kind used twice gets
    two slots (``train_dataset`` and ``eval_dataset`` of kind ``dataset``).
    """

    name: str
    kind: str
    required: bool = False
    doc: str = ""


@hookspec
def llm_gym_components() -> Iterable[type]:
    """Return the component config classes this plugin declares (see ``collect_components``)."""


@hookspec
def llm_gym_recipe_dirs() -> Iterable[Path | Traversable]:
    """Return directories holding recipes as ``<name>/v<version>.yaml``."""


@hookspec
def llm_gym_recipe_slots() -> Iterable[Slot]:
    """Return recipe slots; a kind without a declared slot gets an optional one of its name,
    unless a section or another kind's component holds it in a nested field
    (``trainer.loggers: list[Component["logger"]]``)."""


@hookspec
def llm_gym_recipe_sections() -> Mapping[str, Any]:
    """Return plain (non-component) recipe sections as ``{key: pydantic model class}``."""


@hookspec
def llm_gym_recipe_checks() -> Iterable[Callable[[Any], Iterable[str]]]:
    """Return checks across slots and sections, run with the components' own ``preflight``
    checks before anything is built: each takes the validated recipe and yields problems
    as ``"yaml.path: message"`` (the runner's: ``trainer.eval_every`` needs an
    ``eval_dataset``). Cheap checks only: no building, no reading of data."""
