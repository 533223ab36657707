"""YAML -> OmegaConf -> overrides -> interpolation -> a plain dict, with user errors located.

Interpolation is OmegaConf's: ``${model.config.n_embd}`` refers to another value and
``${oc.env:DATA_DIR,/tmp/data}`` reads an environment variable (with a default).
Overrides are OmegaConf dotlist entries, ``optimizer.config.lr=3e-4``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llm_gym.errors import UserError


def load_yaml(path: Path) -> DictConfig:
    """Load one YAML file into OmegaConf, naming file and line for syntax errors."""
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}: YAML syntax error: {problem}") from None
    except (OmegaConfBaseException, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot load: {exc}") from None
    if isinstance(loaded, DictConfig) and not loaded:
        raise UserError(f"{path}: the recipe file is empty; a recipe is a YAML mapping")
    if not isinstance(loaded, DictConfig):
        raise UserError(f"{path}: a recipe is a YAML mapping (key: value), not a list or scalar")
    return loaded


def apply_overrides(config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Merge ``KEY=VALUE`` overrides (OmegaConf dotlist) over the recipe."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.max_steps=100")
    try:
        return OmegaConf.merge(config, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise UserError(f"override: {_omegaconf_message(exc)}") from None


def resolve(config: DictConfig, source: Path | str) -> dict[str, Any]:
    """Resolve every interpolation; a bad one is reported with the key that holds it."""
    try:
        resolved = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise UserError(f"{source}: {key}: {_omegaconf_message(exc)}") from None
    assert isinstance(resolved, dict)
    return resolved


def load_config(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    return resolve(apply_overrides(load_yaml(path), overrides), path)


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    # OmegaConf appends a multi-line "full_key: ... object_type=..." block; the first line says it.
    return str(exc).strip().splitlines()[0]
