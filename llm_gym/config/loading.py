"""YAML -> OmegaConf -> overrides -> interpolation -> a plain dict, with user errors located.

Interpolation is OmegaConf's: ``${model.config.n_embd}`` refers to another value and
``${oc.env:DATA_DIR,/tmp/data}`` reads an environment variable (with a default).
Overrides are OmegaConf dotlist entries, ``optimizer.config.lr=3e-4``; their values are
YAML, parsed by the same bounded parser as recipe files (``yaml_files``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigIndexError, OmegaConfBaseException

from llm_gym.config.interpolation_bounds import bounded_interpolation
from llm_gym.config.yaml_files import YAMLProblem, parse_yaml, read_yaml_file
from llm_gym.errors import UserError
from llm_gym.registry.kinds import closest_name, yaml_repr


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
    """Apply ``KEY=VALUE`` overrides over (a copy of) the recipe, in order.

    KEY is a dotted path as errors print it, list items included
    (``train_dataset.config.sources[1].config.path``); a mapping VALUE merges into the
    mapping there, any other value replaces what is there.
    """
    updated = config.copy()
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
        _check_list_items(updated, key.strip(), item)
        target = _through_interpolation(updated, key.strip())
        try:
            # A list given where the recipe has a mapping (``model=[GPT2]``), or the other
            # way round, replaces it: validation then says what belongs there.
            merge = not (isinstance(value, list) and isinstance(target, DictConfig)
                         or isinstance(value, dict) and isinstance(target, ListConfig))
            OmegaConf.update(updated, key.strip(), value, merge=merge)
        except (OmegaConfBaseException, TypeError, ValueError) as exc:
            raise UserError(f"override {_short(item)!r}: {_override_problem(exc)}") from None
    return updated


def _check_list_items(config: DictConfig, key: str, item: str) -> None:
    """``a.b[1].c`` indexes the list ``a.b``: it must be one in the recipe, or OmegaConf
    would quietly make a mapping with a key "1" there."""
    for index in re.finditer(r"\[\d+\]", key):
        prefix = key[:index.start()]
        try:
            node = OmegaConf.select(config, prefix, default=_ABSENT, throw_on_missing=False)
        except OmegaConfBaseException:
            return  # OmegaConf.update names the problem
        if node is _ABSENT:
            raise UserError(f"override {_short(item)!r}: {prefix} is not in the recipe file (its "
                            f"default applies), so it has no items to change: set the whole "
                            f"list, e.g. {prefix}=[...]")
        if not isinstance(node, ListConfig):
            raise UserError(f"override {_short(item)!r}: {prefix} is not a list in the recipe, "
                            f"so {key[:index.end()]} indexes nothing")


_ABSENT = object()
_KEY_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
_WHOLE_REFERENCE = re.compile(r"^\$\{([^${}:]+)\}$")


def _through_interpolation(config: DictConfig, key: str) -> Any:
    """The node an override of ``key`` replaces (None if it is not in the recipe yet).

    An override that goes through an interpolated value (``eval.weights.1`` where
    ``eval.weights`` is ``${train.weights}``) is refused: OmegaConf would change the value
    it was copied from, so the run would silently differ in a value never named."""
    node: Any = config
    for match in _KEY_PART.finditer(key):
        if not isinstance(node, DictConfig | ListConfig):
            return None
        part: Any = match[1] if match[1] is not None else match[2]
        if isinstance(node, ListConfig):
            if not str(part).isdigit() or int(part) >= len(node):
                return None
            part = int(part)
        try:
            child = node._get_node(part)
        except OmegaConfBaseException:
            return None
        if child is None:
            return None
        rest = key[match.end():]
        if rest and child._is_interpolation():
            raise _refused_through(key, key[:match.end()], str(child._value()), rest)
        node = child
    return node


def _refused_through(key: str, prefix: str, expression: str, rest: str) -> UserError:
    following = _KEY_PART.match(rest.lstrip("."))
    whole = "[...]" if following and (following[1] or following[2].isdigit()) else "{...}"
    advice = f"set the whole value ({prefix}={whole})"
    reference = _WHOLE_REFERENCE.match(expression)
    if reference:
        advice += f" or the source ({reference[1].strip()}{rest}=...)"
    return UserError(f"override {key}: {prefix} is {expression}; {advice}")


def _override_problem(exc: Exception) -> str:
    if isinstance(exc, ConfigIndexError) and getattr(exc, "full_key", None):
        return f"the recipe has no item {exc.full_key} ({_omegaconf_message(exc)})"
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_message(exc)
    # OmegaConf's TypeError when a mapping meets a list (``sources.x=1`` on a list).
    return f"{exc}: the key does not fit the recipe's shape there (a list is indexed as [1])"


def resolve(config: DictConfig, source: Path | str) -> dict[str, Any]:
    """Resolve every interpolation; a bad one is reported with the key that holds it.

    What interpolation may produce is bounded (``interpolation_bounds``): a few bytes of
    references repeating references would otherwise expand past any memory."""
    try:
        with bounded_interpolation():
            resolved = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise UserError(f"{source}: {key}: {_resolution_problem(exc, config, key)}") from None
    assert isinstance(resolved, dict)
    return resolved


_NOT_FOUND = re.compile(r"Interpolation key '(.+?)' not found")
_NO_VARIABLE = re.compile(r"Environment variable '(.+?)' not found")
_NOT_A_CONTAINER = re.compile(r"node `(.+?)` is not a container and thus cannot contain `(.+?)`")
_RAISED_WHILE = re.compile(r"^\w+ raised while resolving interpolation: ")


def _resolution_problem(exc: OmegaConfBaseException, config: DictConfig, key: str) -> str:
    """What is wrong with the interpolation at ``key``, in the recipe's words: the key it
    refers to and the closest one there is, the variable to set, the value that is no
    mapping."""
    message = _omegaconf_message(exc)
    try:
        expression = interpolations(config).get(key)
    except OmegaConfBaseException:
        expression = None
    written = f"{expression} " if expression else ""
    if found := _NOT_FOUND.search(message):
        missing = found[1]
        closest = closest_name(missing, _all_keys(config))
        hint = f"; did you mean {closest!r}?" if closest else ""
        return f"{written}refers to {missing}, which is not in the recipe{hint}"
    if found := _NO_VARIABLE.search(message):
        variable = found[1]
        return (f"{written}reads the environment variable {variable}, which is not set: "
                f"set it, or give a default: ${{oc.env:{variable},default}}")
    if found := _NOT_A_CONTAINER.search(message):
        parent, child = found[1], found[2]
        try:
            value = OmegaConf.to_container(config, resolve=False)
            for part in parent.split("."):
                value = value[int(part) if isinstance(value, list) else part]
            what = f"{yaml_repr(value)}, not a mapping"
        except (LookupError, ValueError, TypeError):
            what = "not a mapping"
        return f"{written}refers to {parent}.{child}, but {parent} is {what}"
    return _RAISED_WHILE.sub("", message)


def _all_keys(config: DictConfig) -> list[str]:
    """Every dotted key of the recipe, mappings and lists included (``trainer``,
    ``trainer.seq_len``, ``optimizer.config.betas.0``)."""
    raw = OmegaConf.to_container(config, resolve=False)
    return [path for path, _ in walk_paths(raw, "", ".{}") if path]


def interpolations(config: DictConfig) -> dict[str, str]:
    """``YAML path -> interpolation string`` for every value written as ``${...}``."""
    raw = OmegaConf.to_container(config, resolve=False)
    return {path: value for path, value in walk_paths(raw, "", "[{}]")
            if isinstance(value, str) and "${" in value}


def walk_paths(node: Any, path: str = "", item: str = "[{}]") -> Iterator[tuple[str, Any]]:
    """``(path, value)`` of ``node`` and of everything in it; list items are named by
    ``item`` (``.{}`` as overrides write them, ``[{}]`` as error messages do)."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_paths(value, f"{path}.{key}" if path else str(key), item)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_paths(value, path + item.format(i), item)


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
