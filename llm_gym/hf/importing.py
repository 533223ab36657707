"""``llm_gym import hf``: a run directory that starts from a Hugging Face checkpoint.

``RUN_DIR/hf/`` receives the model, converted to ``model.safetensors`` (so nothing pickled
is read again) with the source's tokenizer files; ``RUN_DIR/recipe.resolved.yaml`` is a
base recipe whose ``model`` entry is replaced by the architecture's pretrained component
(e.g. ``GPT2Pretrained`` with ``path: RUN_DIR/hf``) and whose ``tokenizer`` entry reads
those tokenizer files. The run directory has no checkpoint yet: ``generate`` and ``export``
use the imported weights, and ``llm_gym recipe run RUN_DIR/recipe.resolved.yaml --run-dir
RUN_DIR`` trains from them, at any number of processes.

``RUN_DIR`` must be absent or empty; it is written under a temporary name beside it and
renamed into place at the end (``llm_gym.hf.directory_output``), so a failed import leaves
nothing behind. The model component checks ``config.json``'s sizes against the weights'
headers before it allocates anything.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_gym.config.recipe_model import validate_recipe
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input
from llm_gym.hf.adapter import component_for_model_type
from llm_gym.hf.directory_output import directory_output, existing_entries
from llm_gym.hf.files import CONFIG, read_config, write_model_dir
from llm_gym.hf.tokenizer_files import TOKENIZER_FILES
from llm_gym.model_contract import LanguageModel, as_language_model
from llm_gym.recipes.loading import check_dependencies, load_recipe
from llm_gym.recipes.pins import current_pins
from llm_gym.recipes.resolved import RESOLVED_FILE
from llm_gym.registry import ResolverRegistry
from llm_gym.runner.checkpoint import CHECKPOINTS

HF_SUBDIR = "hf"
NOT_EMPTY = "import into a new (absent or empty) directory"


@dataclass
class ImportResult:
    run_dir: Path
    recipe_path: Path
    model_type: str
    num_params: int
    notes: list[str] = field(default_factory=list)


def import_hf(
    source: Path,
    run_dir: Path,
    *,
    base: str | None = None,
    overrides: Sequence[str] = (),
    recipe_dirs: Sequence[Path] = (),
    allow_drift: bool = False,
    registry: ResolverRegistry | None = None,
) -> ImportResult:
    """Import the Hugging Face model directory ``source`` as the run directory ``run_dir``.

    ``base`` (a recipe name or file, with ``overrides``) supplies everything but the model
    and, when ``source`` has tokenizer files, the tokenizer; by default the recipe the
    source's architecture names (its adapter's ``default_recipe``, e.g. llama-tiny).
    """
    source, run_dir = Path(source), Path(run_dir)
    if (run_dir / RESOLVED_FILE).exists() or (run_dir / CHECKPOINTS).exists():
        raise UserError(f"{run_dir}: already a run directory; import into a new one")
    existing_entries(run_dir)  # not a directory: said before anything is loaded
    registry = registry or ResolverRegistry.from_installed_plugins()
    config = read_config(source)
    spec, adapter = component_for_model_type(registry, config.get("model_type"))
    if base is None:
        base = adapter.default_recipe
    loaded = load_recipe(base, overrides, registry=registry, recipe_dirs=recipe_dirs,
                         allow_drift=allow_drift)
    # Everything is written under a temporary name and renamed to run_dir at the end: a
    # failure (a full disk, a recipe that does not fit) leaves no half-made run directory.
    with directory_output(run_dir, replace_files=False, refusal=NOT_EMPTY) as output:
        staged_hf, final_hf = output.path / HF_SUBDIR, output.target / HF_SUBDIR
        # Built through the component itself: the weights are checked exactly as training
        # will load them, then written back as safetensors with the source's token ids.
        model = as_language_model(
            registry.build_component_by_key_query("model", spec.name, {"path": source}),
            spec.name)
        eos_id = _token_id(config, "eos_token_id", model.vocab_size, source)
        out_config, tensors = adapter.to_hf(model, eod_id=eos_id)
        write_model_dir(staged_hf, out_config, tensors)
        for name in TOKENIZER_FILES:  # plain data; anything else (code above all) stays behind
            if os.path.lexists(source / name):
                _copy_input(source / name, staged_hf / name)

        # Checked where the files are now, then written naming where they will be.
        data = copy.deepcopy(loaded.data)
        data["model"] = {"type_hint": spec.name, "config": {"path": str(staged_hf)}}
        notes = []
        tokenizer = adapter.tokenizer_entry(staged_hf, out_config)
        if tokenizer is not None:
            data["tokenizer"] = tokenizer
        else:
            kept = (data.get("tokenizer") or {}).get("type_hint", "none")
            notes.append(f"{source} has no tokenizer files: the base recipe's tokenizer "
                         f"({kept}) is kept; it must produce the ids the model was trained on")
        data.pop("pins", None)
        meta = dict(data.get("recipe") or {})
        meta["description"] = f"{loaded.ref.label} starting from {source.resolve()}"
        data["recipe"] = meta
        recipe_path = run_dir / RESOLVED_FILE
        data["pins"] = current_pins(validate_recipe(data, registry, str(recipe_path)))
        recipe = validate_recipe(data, registry, str(recipe_path))
        check_dependencies(recipe, registry, str(recipe_path))
        _check_fit(model, recipe, registry, tokenizer is not None)

        header = (f"# imported from {source.resolve()} by `llm_gym import hf`, on "
                  f"{loaded.ref.label} ({loaded.ref.path})\n")
        dumped = _relocated(recipe.model_dump(mode="json", exclude_none=True),
                            str(staged_hf), str(final_hf))
        body = yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)
        with atomic_output(output.path / RESOLVED_FILE, "w", encoding="utf-8") as f:
            f.write(header + body)
    num_params = sum(p.numel() for p in model.parameters())
    return ImportResult(run_dir, recipe_path, adapter.model_type, num_params, notes)


def _copy_input(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, reading the file that was opened and checked (a
    FIFO or a directory of a tokenizer file's name is a UserError, not a hang)."""
    with open_input(source, "a tokenizer file") as f, atomic_output(target, "wb") as out:
        try:
            shutil.copyfileobj(f, out)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise  # the output's: atomic_output says so, naming it
            raise UserError(f"{source}: cannot read: {exc}") from None


def _token_id(config: dict[str, Any], key: str, vocab_size: int | None,
              source: Path) -> int | None:
    """config.json's ``key`` if it is a token id of the model (or absent)."""
    value = config.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0 or (vocab_size is not None and value >= vocab_size):
        top = "" if vocab_size is None else f"..{vocab_size - 1}"
        raise UserError(f"{source / CONFIG}: {key} {value!r} is not a token id of the "
                        f"model (0{top})")
    return value


def _relocated(value: Any, old: str, new: str) -> Any:
    """``value`` with every string naming ``old`` or a path under it moved to ``new``."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    return value


def _check_fit(model: LanguageModel, recipe: Any, registry: ResolverRegistry,
               new_tokenizer: bool) -> None:
    """Fail now on what would otherwise fail in the first training step."""
    seq_len = recipe.trainer.seq_len
    if seq_len > model.max_seq_len:
        raise UserError(f"trainer.seq_len={seq_len} exceeds the model's longest sequence "
                        f"({model.max_seq_len}); pass trainer.seq_len={model.max_seq_len} "
                        "(or less)")
    if new_tokenizer:
        tokenizer = registry.build_component_by_config(recipe.components()["tokenizer"])
        if tokenizer.vocab_size > model.vocab_size:
            raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's "
                            f"vocabulary is {model.vocab_size}")
