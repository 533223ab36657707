"""The docs stay true: the recipe reference matches the registry, and links resolve."""

from __future__ import annotations

import importlib.util
import re

from tests.conftest import REPO


def _generator():
    path = REPO / "tools" / "gen_recipe_reference.py"
    spec = importlib.util.spec_from_file_location("gen_recipe_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_reference_is_up_to_date_with_the_registry():
    committed = (REPO / "docs" / "recipe-reference.md").read_text(encoding="utf-8")
    assert committed == _generator().render(), (
        "docs/recipe-reference.md is stale: run python tools/gen_recipe_reference.py"
    )


def test_the_reference_names_every_builtin_component_and_field():
    generator = _generator()
    text = generator.render()
    for kind in generator.builtin_registry().kinds.values():
        for spec in kind.specs:
            assert f"### {kind.name} `{spec.name}`" in text
            for field in spec.config_cls.model_fields:
                assert f"| `{field}` |" in text


def test_relative_links_in_readme_and_docs_resolve():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text("utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken
