"""Finding plugins: only installed ``llm_gym`` entry points, never paths named in a recipe."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from llm_gym.errors import UserError
from llm_gym.registry import hookspecs

ENTRY_POINT_GROUP = "llm_gym"
# The application's own plugin (the recipe slots and sections the runner needs), found
# the same way so that the registry names no module above it (llm_gym/core_plugin.py).
CORE_ENTRY_POINT_GROUP = "llm_gym.core"


class PluginLoadError(UserError):
    """An installed plugin could not be imported; names its distribution and entry point."""


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def installed_entry_points(group: str = ENTRY_POINT_GROUP) -> list[EntryPoint]:
    unique: dict[tuple[str, str], EntryPoint] = {}
    for ep in entry_points(group=group):
        unique.setdefault((ep.name, ep.value), ep)  # an editable install may list one twice
    return sorted(unique.values(), key=lambda ep: ep.name)


def load_entry_point_plugins(manager: pluggy.PluginManager,
                             group: str = ENTRY_POINT_GROUP) -> dict[str, str]:
    """Import and register every installed plugin of ``group``, saying which one failed
    and why.

    Returns ``plugin name -> "entry point ... of distribution ..."`` for later messages.
    """
    origins = {}
    for ep in installed_entry_points(group):
        if manager.has_plugin(ep.name):
            continue
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        origins[ep.name] = f"entry point {ep.name} = {ep.value!r} of distribution {dist!r}"
        try:
            plugin = ep.load()
        except Exception as exc:  # any import failure is the plugin's, and must be named
            raise PluginLoadError(
                f"plugin {ep.name!r} ({origins[ep.name]}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        manager.register(plugin, name=ep.name)
    return origins


def call_each(
    manager: pluggy.PluginManager, hook_name: str, origins: dict[str, str]
) -> list[tuple[str, Any]]:
    """Call one hook plugin by plugin, so that a failure names the plugin it came from."""
    results = []
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        try:
            results.append((impl.plugin_name, impl.function()))
        except Exception as exc:  # the plugin's own code failed: name it, keep the cause
            origin = origins.get(impl.plugin_name, "registered in-process")
            raise PluginLoadError(
                f"plugin {impl.plugin_name!r} ({origin}) failed in {hook_name}(): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return results
