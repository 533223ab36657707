"""Pins: the component set a recipe was written against, and what drifted since.

A recipe carries, for every component it uses, ``kind/name: {version, fingerprint}``.
``recipe lock`` rewrites only the recipe's top-level ``pins:`` block, so comments and
layout elsewhere in the file survive.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.config.yaml_files import parse_yaml
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.registry.nesting import iter_choices

_PINS_LINE = re.compile(r"^pins:(\s.*)?$")


@dataclass(frozen=True)
class Drift:
    key: str
    change: str
    # True: an installed component differs from its pin. False: the recipe's set of
    # components differs from its pins (a component unpinned, or pinned but unused).
    component_changed: bool = False

    def __str__(self) -> str:
        return f"{self.key}: {self.change}" if self.key else self.change


# The one drift of a recipe that has no pins at all: said once, not once per component.
NOT_PINNED = Drift("", "the recipe is not pinned yet; pin it with `llm_gym recipe lock`")


def used_components(recipe: Any) -> dict[str, list[str]]:
    """``kind/name -> yaml paths`` of every component the recipe uses, at any depth:
    slots, components nested in them, and those a section holds (``trainer.loggers``)."""
    used: dict[str, list[str]] = {}
    for path, choice in iter_choices(recipe, ""):
        used.setdefault(spec_of(choice.type_hint.value).key, []).append(path)
    return used


def current_pins(recipe: Any) -> dict[str, dict[str, Any]]:
    """What the installed components say for every component the recipe uses."""
    pins = {}
    for _, choice in iter_choices(recipe, ""):
        spec = spec_of(choice.type_hint.value)
        pins[spec.key] = {"version": spec.version, "fingerprint": spec.fingerprint}
    return dict(sorted(pins.items()))


def find_drift(recipe: Any, registry: ResolverRegistry) -> list[Drift]:
    now = current_pins(recipe)
    if not recipe.pins and now:
        return [NOT_PINNED]
    where = {key: _nested_paths(paths) for key, paths in used_components(recipe).items()}
    pinned = {key: pin.model_dump() for key, pin in recipe.pins.items()}
    drift = []
    for key, pin in now.items():
        old = pinned.get(key)
        if old is None:
            drift.append(Drift(key + where[key], "used but not pinned"))
            continue
        changes = [
            f"{field} {old[field]} -> {pin[field]}"
            for field in ("version", "fingerprint")
            if old[field] != pin[field]
        ]
        if changes:
            drift.append(Drift(key + where[key], ", ".join(changes), component_changed=True))
    for key in pinned:
        if key not in now:
            drift.append(Drift(key, "pinned but no longer used by the recipe"))
    return drift


def _nested_paths(paths: list[str]) -> str:
    """`` (at train_dataset.config.sources[1])`` for a component used below a slot; a slot
    itself (``model``) needs no saying."""
    nested = [p for p in paths if "." in p or "[" in p]
    return f" (at {', '.join(nested)})" if nested else ""


def render_pins(pins: dict[str, dict[str, Any]]) -> str:
    lines = ["pins:"]
    for key, pin in pins.items():
        lines.append(f"  {key}: {{version: {pin['version']}, fingerprint: {pin['fingerprint']}}}")
    return "\n".join(lines) + "\n"


def write_pins(path: Path, pins: dict[str, dict[str, Any]]) -> None:
    """Replace the top-level ``pins:`` block of ``path`` (or append one), atomically."""
    lines = _read_recipe_text(path).splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _PINS_LINE.match(line.rstrip("\n"))), None)
    block = render_pins(pins)
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        new_lines = [*lines, "\n# Written by `llm_gym recipe lock`.\n", block]
    else:
        end = start + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        trailing_blank = [ln for ln in lines[start + 1:end] if not ln.strip()]
        new_lines = [*lines[:start], block, *trailing_blank[-1:], *lines[end:]]
    text = "".join(new_lines)
    if (parse_yaml(text, str(path)) or {}).get("pins") != (pins or None):
        raise UserError(f"{path}: could not rewrite its pins block safely; edit it by hand")
    with atomic_output(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _read_recipe_text(path: Path) -> str:
    # Opened once and checked on the open descriptor (open_input): the recipe was read
    # before, but what is at the path now may be a FIFO swapped in, which would block.
    with open_input(path, "the recipe file") as raw, \
            io.TextIOWrapper(raw, encoding="utf-8") as text:  # universal newlines, as read
        try:
            return text.read()
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: the recipe file is not UTF-8 text ({exc})") from None
