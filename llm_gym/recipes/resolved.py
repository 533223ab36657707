"""The resolved recipe as YAML: every value after interpolation and overrides, and the pins.

A run keeps one resolved recipe per segment (docs/resuming.md): ``recipe.resolved.yaml``
for the segment that started at step 0, ``recipe.resolved.step_00000100.yaml`` for one
that resumed from step 100 with a changed recipe. The recipe that wrote a checkpoint is
the segment file with the highest start below the checkpoint's step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from llm_gym.config.yaml_files import parse_yaml, read_yaml_file
from llm_gym.errors import UserError
from llm_gym.run_layout import RunLayout, segment_recipe_name

# Where a run keeps the recipe it ran, written by rank 0 before training starts.
RESOLVED_FILE = RunLayout.RESOLVED_RECIPE
_SEGMENT_FILE = re.compile(r"^recipe\.resolved\.step_(\d{8,})\.yaml$")


def resolved_yaml(loaded: Any) -> str:
    data = loaded.recipe.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def resolved_data(loaded: Any) -> dict[str, Any]:
    """The resolved recipe as it reads back from its YAML (for comparing with a file):
    parsed by the same reader as the file, so both sides resolve scalars alike."""
    return parse_yaml(resolved_yaml(loaded), "the resolved recipe")


def segment_file_name(start_step: int) -> str:
    """The resolved recipe of the segment that starts at ``start_step``."""
    return segment_recipe_name(start_step)


def segment_files(run_dir: Path) -> list[tuple[int, Path]]:
    """``(start step, path)`` of every segment's resolved recipe in ``run_dir``, by step."""
    found = []
    if (run_dir / RESOLVED_FILE).exists():
        found.append((0, run_dir / RESOLVED_FILE))
    if run_dir.is_dir():
        for child in run_dir.iterdir():
            match = _SEGMENT_FILE.match(child.name)
            if match:
                found.append((int(match.group(1)), child))
    return sorted(found)


def read_resolved(path: Path) -> dict[str, Any]:
    """A resolved recipe file's data, read within the YAML bounds every recipe is read
    with (a run directory's files are user input too); a file that is not one is named."""
    data = read_yaml_file(path, what="resolved recipe")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a resolved recipe (a mapping of sections)")
    return data
