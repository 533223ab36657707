"""Third-party plugins: found through installed entry points, exactly like the built-in set."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.plugins import load_entry_point_plugins, new_plugin_manager
from tests.conftest import REPO, run_cli, write_fake_distribution

PLUGIN_INIT = '''
from llm_gym.registry import collect_components, hookimpl

@hookimpl
def llm_gym_components():
    return collect_components(__name__)
'''

GEARS = '''
from pydantic import Field
from llm_gym.registry import ComponentConfig, component

@component("widget", "Gear", version=1)
class GearConfig(ComponentConfig):
    """A gear: the acme plugin's first component."""
    teeth: int = Field(12, ge=3, description="number of teeth")

    def build(self) -> str:
        return f"gear with {self.teeth} teeth"
'''

SPRINGS = '''
from llm_gym.registry import ComponentConfig, component

@component("widget", "Spring", version=1)
class SpringConfig(ComponentConfig):
    """A spring, added later as one new file."""
    stiffness: float = 1.0

    def build(self) -> str:
        return f"spring {self.stiffness}"
'''


@pytest.fixture
def acme_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = write_fake_distribution(tmp_path / "site", "acme_widgets",
                                   {"__init__.py": PLUGIN_INIT, "gears.py": GEARS})
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m.startswith("acme_widgets")]:
        del sys.modules[name]


def _widget_recipe(tmp_path: Path, type_hint: str, config: str) -> Path:
    path = tmp_path / "widget-recipe.yaml"
    path.write_text(f"widget:\n  type_hint: {type_hint}\n  config: {config}\n")
    return path


def test_entry_point_plugin_component_builds_from_a_recipe(acme_site, tmp_path):
    from llm_gym.config.loading import load_config
    from llm_gym.config.recipe_model import build_recipe_model

    assert "Gear" in ResolverRegistry.from_installed_plugins().kind("widget").names
    # Without the core's runner slots (model, optimizer, ... are required to run), a recipe
    # of plugin components alone is complete.
    manager = new_plugin_manager()
    registry = ResolverRegistry(manager, load_entry_point_plugins(manager))
    data = load_config(_widget_recipe(tmp_path, "Gear", "{teeth: 40}"))
    recipe = build_recipe_model(registry).model_validate(data)
    assert recipe.widget.type_hint is registry.enum("widget")["Gear"]
    assert registry.build_component_by_config(recipe.widget) == "gear with 40 teeth"


def test_one_new_file_is_all_it_takes(acme_site, tmp_path):
    env = {"PYTHONPATH": f"{acme_site}:{REPO}"}
    before = run_cli("components", "list", "widget", env=env)
    assert before.returncode == 0, before.stderr
    assert "Gear" in before.stdout and "Spring" not in before.stdout

    (acme_site / "acme_widgets" / "springs.py").write_text(SPRINGS)  # the only change

    listed = run_cli("components", "list", "widget", env=env)
    assert "Spring" in listed.stdout and "added later as one new file" in listed.stdout
    schema = json.loads(run_cli("recipe", "schema", env=env).stdout)
    assert '"const": "Spring"' in json.dumps(schema)
    shown = run_cli("components", "show", "widget", "spring", env=env)
    assert "stiffness" in shown.stdout and "1.0" in shown.stdout

    for name in [m for m in sys.modules if m.startswith("acme_widgets")]:
        del sys.modules[name]
    registry = ResolverRegistry.from_installed_plugins()
    assert registry.enum("widget")("Spring").name == "Spring"
    from pydantic import TypeAdapter

    entry = TypeAdapter(registry.kind("widget").choice_type).validate_python(
        {"type_hint": "spring", "config": {"stiffness": 2.5}})
    assert registry.build_component_by_config(entry) == "spring 2.5"


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    site = write_fake_distribution(
        tmp_path / "site", "broken_plugin", {"__init__.py": "import no_such_module_here\n"},
        dist="broken-dist", entry_point="broken")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError) as caught:
        ResolverRegistry.from_installed_plugins()
    message = str(caught.value)
    assert "'broken'" in message and "'broken-dist'" in message
    assert "no_such_module_here" in message
    result = run_cli("components", "list", env={"PYTHONPATH": f"{site}:{REPO}"})
    assert result.returncode == 2
    assert "broken-dist" in result.stderr and "Traceback" not in result.stderr


def test_plugin_whose_hook_fails_is_named(tmp_path, monkeypatch):
    hook_fails = PLUGIN_INIT.replace("return collect_components(__name__)",
                                     "raise RuntimeError('boom in hook')")
    site = write_fake_distribution(tmp_path / "site", "hook_fails", {"__init__.py": hook_fails},
                                   dist="hook-fails", entry_point="hookfails")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError, match="'hookfails'.*hook-fails.*boom in hook"):
        ResolverRegistry.from_installed_plugins()


def test_core_never_imports_the_builtin_set():
    """The built-in set is a plugin: nothing under llm_gym/ may import it."""
    offenders = []
    for path in (REPO / "llm_gym").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in ("llm_gym_components", "components")]
    assert offenders == []


def test_builtin_set_is_registered_only_through_its_entry_point():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="llm_gym") if ep.value == "llm_gym_components"]
    assert [ep.name for ep in eps][:1] == ["builtin"]


def _imports_of(package: Path) -> list[tuple[str, str]]:
    """(file, imported module) for every import statement under ``package``."""
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from llm_gym import core_plugin` imports llm_gym.core_plugin
                found += [(path.name, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_the_registry_knows_nothing_of_the_runner_or_the_core_plugin():
    """The core plugin (the runner's slots and sections) arrives by its entry point, so
    the import graph runs one way: runner -> registry, never back, not even lazily."""
    offenders = [f"{f}: {m}" for f, m in _imports_of(REPO / "llm_gym" / "registry")
                 if m.startswith(("llm_gym.runner", "llm_gym.core_plugin", "llm_gym.cli"))]
    assert offenders == []
    registry = ResolverRegistry.from_installed_plugins()
    assert {"model", "optimizer", "train_dataset"} <= {s.name for s in registry.slots()}


def test_without_the_core_plugin_installed_the_registry_says_so(monkeypatch):
    from llm_gym.registry import plugins

    real = plugins.installed_entry_points
    monkeypatch.setattr(plugins, "installed_entry_points",
                        lambda group=plugins.ENTRY_POINT_GROUP: [] if group == "llm_gym.core"
                        else real(group))
    with pytest.raises(UserError, match=r"core plugin is not installed .*'llm_gym.core'.*"
                                        r"pip install -e \."):
        ResolverRegistry.from_installed_plugins()
