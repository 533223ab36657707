"""``llm_gym export hf``: a run's model as a Hugging Face directory transformers loads.

Writes ``config.json`` and ``model.safetensors`` (fp32, Hugging Face's names and layout,
from the architecture's adapter) and, when the recipe's tokenizer is backed by Hugging Face
``tokenizers``, ``tokenizer.json`` + ``tokenizer_config.json`` (plus ``vocab.json`` and
``merges.txt`` for a byte-level BPE, which the slow GPT-2 tokenizer reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.hf.adapter import adapter_for_model
from llm_gym.hf.files import CONFIG, SAFETENSORS, write_model_dir
from llm_gym.hf.tokenizer_files import TOKENIZER_FILES, write_tokenizer_files
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.runner.loading_model import load_run_model


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path | None
    files: list[str]
    notes: list[str] = field(default_factory=list)


def export_hf(
    source: Path, out_dir: Path, *, registry: ResolverRegistry | None = None
) -> ExportResult:
    """Export the model of ``source`` (a run directory or a checkpoint) to ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    run = load_run_model(source, registry=registry)
    adapter = adapter_for_model(run.registry, run.model)
    eod_id = getattr(run.tokenizer, "eod_id", None)
    config, tensors = adapter.to_hf(run.model, eod_id=eod_id)
    write_model_dir(out_dir, config, tensors)
    files = [CONFIG, SAFETENSORS]
    tokenizer_name = _type_hint(run.recipe, "tokenizer")
    written, note = write_tokenizer_files(
        run.tokenizer, out_dir, name=tokenizer_name, max_length=config.get("n_positions")
    )
    notes = [*run.notes, *([note] if note else [])]
    # A tokenizer file left by an earlier export into the same directory would be read
    # as this model's tokenizer by transformers.
    for stale in set(TOKENIZER_FILES) - set(written):
        if (out_dir / stale).is_file():
            (out_dir / stale).unlink()
            notes.append(f"removed {out_dir / stale}, left by an earlier export")
    return ExportResult(out_dir, run.checkpoint, files + written, notes)


def _type_hint(recipe: Any, slot: str) -> str | None:
    entry = recipe.components().get(slot)
    return None if entry is None else spec_of(entry.type_hint.value).name
