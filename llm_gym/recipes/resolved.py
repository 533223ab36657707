"""The resolved recipe as YAML: every value after interpolation and overrides, and the pins."""

from __future__ import annotations

from typing import Any

import yaml

# Where a run keeps the recipe it ran, written by rank 0 before training starts.
RESOLVED_FILE = "recipe.resolved.yaml"


def resolved_yaml(loaded: Any) -> str:
    data = loaded.recipe.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
