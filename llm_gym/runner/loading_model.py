"""A trained model (and its tokenizer) from a run directory or one checkpoint, in one process.

For export, generation and evaluation outside training: no process group, no FSDP. The
recipe is rebuilt from ``RUN_DIR/recipe.resolved.yaml`` through the registry, so the model
and tokenizer are exactly the recipe's components; the weights come from the checkpoint's
``model.*`` entries (DCP reads them without the optimizer state). The tokenizer comes from
the files the run saved in ``RUN_DIR/tokenizer/`` where there are some, so a run copied to
another machine needs nothing that built its tokenizer (a corpus, a vocabulary package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llm_gym.config.recipe_model import RecipeBase, validate_recipe
from llm_gym.errors import UserError
from llm_gym.fileio import open_input
from llm_gym.hf.adapter import adapter_for_model
from llm_gym.hf.tokenizer_files import RUN_TOKENIZER_DIR, saved_eod_token
from llm_gym.recipes.pins import find_drift
from llm_gym.recipes.resolved import RESOLVED_FILE, read_resolved
from llm_gym.registry import ComponentChoice, ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.runner.checkpoint import CHECKPOINTS, MARKER, latest_checkpoint
from llm_gym.runner.checkpoint_dirs import checkpoints_root
from llm_gym.runner.checkpoint_marker import read_marker
from llm_gym.runner.checkpoint_reading import load_state, open_checkpoint
from llm_gym.runner.distributed import World


@dataclass
class RunModel:
    model: nn.Module  # in eval mode, on the requested device
    tokenizer: Any | None  # None when the recipe has none (or it was not asked for)
    recipe: RecipeBase
    run_dir: Path
    checkpoint: Path | None  # None: the model component loaded its own weights
    registry: ResolverRegistry
    notes: list[str] = field(default_factory=list)  # worth telling the user (stderr)


def locate(path: Path) -> tuple[Path, Path | None]:
    """``(run_dir, checkpoint)`` for a run directory (its newest complete checkpoint, or
    None if it has none) or for a checkpoint directory (``RUN_DIR/checkpoints/step_N``)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such directory (expected a run directory or a checkpoint)")
    if (path / MARKER).is_file() and path.parent.name == CHECKPOINTS:
        if path.name.endswith(".tmp"):
            raise UserError(f"{path}: an unfinished checkpoint; use a complete one")
        run_dir = path.parent.parent
        checkpoints_root(run_dir)  # refused when a symlink, as everywhere
        if not (run_dir / RESOLVED_FILE).is_file():
            raise UserError(f"{path}: its run directory {run_dir} has no {RESOLVED_FILE}")
        return run_dir, path
    if (path / RESOLVED_FILE).is_file():
        return path, latest_checkpoint(path)
    raise UserError(
        f"{path}: neither a run directory (with {RESOLVED_FILE}) nor a complete checkpoint "
        f"(RUN_DIR/{CHECKPOINTS}/step_N with a {MARKER} marker)"
    )


def load_run_model(
    path: Path,
    *,
    registry: ResolverRegistry | None = None,
    tokenizer: bool = True,
    device: str | torch.device = "cpu",
) -> RunModel:
    """Build the recipe's model (and tokenizer) and load the checkpoint's weights."""
    run_dir, checkpoint = locate(path)
    registry = registry or ResolverRegistry.from_installed_plugins()
    source = run_dir / RESOLVED_FILE
    recipe = validate_recipe(read_resolved(source), registry, str(source))
    notes = [f"the run's pin drifted: {d}" for d in find_drift(recipe, registry)
             if d.component_changed]

    entry = recipe.components()["model"]
    if checkpoint is None and not getattr(spec_of(entry.type_hint.value).config_cls,
                                          "loads_weights", False):
        raise UserError(f"{run_dir}: no complete checkpoint yet (a run writes one every "
                        "trainer.checkpoint_every steps and when it ends)")
    cpu = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    with torch.device("cpu"):
        model = _build(registry, entry, recipe, cpu)
    if checkpoint is not None:
        notes.extend(_load_weights(model, checkpoint, cpu))
    else:
        notes.append(f"{run_dir} has no checkpoint: using the weights its model component "
                     "loads (an imported model, not yet trained here)")
    model.to(device).eval()

    tok = None
    if tokenizer and recipe.components().get("tokenizer") is not None:
        tok = _saved_tokenizer(registry, model, run_dir)
        if tok is None:
            tok = _build(registry, recipe.components()["tokenizer"], recipe, cpu)
    return RunModel(model, tok, recipe, run_dir, checkpoint, registry, notes)


def _saved_tokenizer(registry: ResolverRegistry, model: nn.Module, run_dir: Path) -> Any | None:
    """The tokenizer rebuilt from ``RUN_DIR/tokenizer/`` by the component the model's
    Hugging Face adapter names for such files; None where the run saved none (a tokenizer
    with no such form, an older run) or no adapter handles the model."""
    directory = run_dir / RUN_TOKENIZER_DIR
    path = directory / "tokenizer.json"
    if not path.exists() and not path.is_symlink():
        return None
    try:
        adapter = adapter_for_model(registry, model)
    except UserError:
        return None
    from tokenizers import Tokenizer

    eod = saved_eod_token(directory)
    text = _read_text(path, "the run's saved tokenizer")
    try:
        eod_id = Tokenizer.from_str(text).token_to_id(eod or "")
    except Exception as exc:  # the Rust side raises plain Exception
        raise UserError(f"{path}: the run's saved tokenizer does not load: {exc}") from None
    entry = adapter.tokenizer_entry(directory, {"eos_token_id": eod_id})
    if entry is None:
        return None
    return registry.build_component_by_key_query("tokenizer", entry["type_hint"],
                                                 entry["config"])


def _read_text(path: Path, what: str) -> str:
    # Opened once and checked on the open descriptor (open_input), then parsed from the
    # text: Tokenizer.from_file would open the path again, and a FIFO put there after a
    # check would block it forever.
    with open_input(path, what) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text ({exc})") from None


def _build(registry: ResolverRegistry, entry: ComponentChoice, recipe: RecipeBase,
           world: World) -> Any:
    # Only what the runner would inject (world, trainer); a component that needs another
    # slot (a dataset...) is not something to rebuild outside training.
    provided = {"world": world, "trainer": getattr(recipe, "trainer", None)}
    wanted = {d.name for d in spec_of(entry.type_hint.value).dependencies}
    return registry.build_component_by_config(
        entry, extra_kwargs={k: v for k, v in provided.items() if k in wanted}
    )


def _load_weights(model: nn.Module, checkpoint: Path, world: World) -> list[str]:
    """Fill the model's tensors in place (tied weights stay tied) from ``checkpoint``'s
    ``model.*`` entries, verified first (see runner/checkpoint_reading.py); DCP reads
    only those, not the optimizer state. Returns notes for the user."""
    opened = open_checkpoint(checkpoint, read_marker(checkpoint), world, scopes={"model"})
    load_state(opened, {"model": model.state_dict()}, no_dist=True)
    return [opened.note] if opened.note else []
