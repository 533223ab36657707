"""llm_gym's built-in component set: a plugin like any third-party one.

It reaches the registry through the ``llm_gym`` entry point in pyproject.toml; the core
never imports it. Every ``@component`` class in any module below is found on its own.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from llm_gym.registry import collect_components, hookimpl


@hookimpl
def llm_gym_components() -> list[type]:
    return collect_components(__name__)


@hookimpl
def llm_gym_recipe_dirs() -> list[Traversable]:
    return [files("llm_gym_recipes")]
