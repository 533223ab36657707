"""A wheel install (not only an editable checkout) carries the built-in set and recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_ships_components_recipes_and_entry_point(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("llm_gym-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llm_gym_recipes/gpt2-tiny/v1.yaml" in names
    assert "llm_gym_components/models/gpt2.py" in names
    assert not any(n.startswith("components/") for n in names)  # no generic import name
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[llm_gym]" in text and "builtin = llm_gym_components" in text

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    probe = (
        "import llm_gym, llm_gym_recipes; "
        "from llm_gym.registry import ResolverRegistry; "
        "from llm_gym.recipes.catalog import RecipeCatalog; "
        "c = RecipeCatalog.from_registry(ResolverRegistry.from_installed_plugins()); "
        "print(llm_gym.__file__, c.resolve('gpt2-tiny').path)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)}).stdout
    module_file, recipe_path = out.split()
    assert module_file.startswith(str(target)) and recipe_path.startswith(str(target))
