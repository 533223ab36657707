"""YAML -> OmegaConf -> overrides -> interpolation -> a plain dict, with user errors located.

Interpolation is OmegaConf's: ``${model.config.n_embd}`` refers to another value and
``${oc.env:DATA_DIR,/tmp/data}`` reads an environment variable (with a default).
Overrides are OmegaConf dotlist entries, ``optimizer.config.lr=3e-4``; their values are
YAML, parsed by the same bounded parser as recipe files (``yaml_files``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from llm_gym.config.interpolation_bounds import bounded_interpolation
from llm_gym.config.yaml_files import YAMLProblem, parse_yaml, read_yaml_file
from llm_gym.errors import UserError


@dataclass(frozen=True)
class LoadedConfig:
    """The resolved recipe, and where its interpolated values came from."""

    data: dict[str, Any]
    # YAML path -> the interpolation it was resolved from, ``scheduler.config.decay_steps
    # -> ${trainer.max_steps}``: an error about the value can name the key to change.
    interpolations: dict[str, str]


def load_yaml(path: Path) -> DictConfig:
    """Load one recipe file into OmegaConf, naming file and line for syntax errors."""
    data = read_yaml_file(path, what="recipe file")
    if data is None or data == {}:
        raise UserError(f"{path}: the recipe file is empty; a recipe is a YAML mapping")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping (key: value), not "
                        f"{_what_it_is(data)}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise UserError(f"{path}: cannot load: {_omegaconf_message(exc)}") from None


def apply_overrides(config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Merge ``KEY=VALUE`` overrides (OmegaConf dotlist) over the recipe."""
    updates = OmegaConf.create()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.max_steps=100")
        try:
            value = parse_yaml(raw, source=f"override {_short(item)!r}")
        except YAMLProblem as exc:
            hint = ("" if exc.problem.startswith("refused") else
                    f"; a value is YAML (3, 1e-3, [1, 2], {{a: 1}}): to pass it as a string, "
                    f"quote it: {key}='\"{_short(raw)}\"'")
            raise UserError(f"override {_short(item)!r}: the value is not valid YAML "
                            f"({exc.problem}){hint}") from None
        try:
            OmegaConf.update(updates, key, value)
        except OmegaConfBaseException as exc:
            raise UserError(f"override {_short(item)!r}: {_omegaconf_message(exc)}") from None
    try:
        return OmegaConf.merge(config, updates)
    except OmegaConfBaseException as exc:
        raise UserError(f"override: {_omegaconf_message(exc)}") from None


def resolve(config: DictConfig, source: Path | str) -> dict[str, Any]:
    """Resolve every interpolation; a bad one is reported with the key that holds it.

    What interpolation may produce is bounded (``interpolation_bounds``): a few bytes of
    references repeating references would otherwise expand past any memory."""
    try:
        with bounded_interpolation():
            resolved = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise UserError(f"{source}: {key}: {_omegaconf_message(exc)}") from None
    assert isinstance(resolved, dict)
    return resolved


def interpolations(config: DictConfig) -> dict[str, str]:
    """``YAML path -> interpolation string`` for every value written as ``${...}``."""
    raw = OmegaConf.to_container(config, resolve=False)
    found: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and "${" in node:
            found[path] = node

    walk(raw, "")
    return found


def load_config_with_sources(path: Path, overrides: Sequence[str] = ()) -> LoadedConfig:
    config = apply_overrides(load_yaml(path), overrides)
    return LoadedConfig(resolve(config, path), interpolations(config))


def load_config(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    return load_config_with_sources(path, overrides).data


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _what_it_is(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value, 40)!r})"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    # OmegaConf appends a multi-line "full_key: ... object_type=..." block; the first line says it.
    return str(exc).strip().splitlines()[0]
