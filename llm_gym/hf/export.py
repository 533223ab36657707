"""``llm_gym export hf``: a run's model as a Hugging Face directory transformers loads.

Writes ``config.json`` and ``model.safetensors`` (fp32, Hugging Face's names and layout,
from the architecture's adapter) and, when the recipe's tokenizer is backed by Hugging Face
``tokenizers``, ``tokenizer.json`` + ``tokenizer_config.json`` (plus ``vocab.json`` and
``merges.txt`` for a byte-level BPE, which the slow GPT-2 tokenizer reads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output
from llm_gym.hf.adapter import adapter_for_model
from llm_gym.hf.files import CONFIG, SAFETENSORS, write_json, write_model_dir
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.runner.loading_model import load_run_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt")


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


def write_tokenizer_files(
    tokenizer: Any, out_dir: Path, *, name: str | None, max_length: int | None
) -> tuple[list[str], str | None]:
    """Write what transformers needs to rebuild ``tokenizer``; return the file names and,
    when nothing could be written, a note saying why."""
    if tokenizer is None:
        return [], "the recipe has no tokenizer: no tokenizer files were written"
    hf = getattr(tokenizer, "hf_tokenizer", None)  # HFTokenizer's Rust tokenizer
    if hf is None:
        return [], (
            f"the recipe's tokenizer ({name or type(tokenizer).__name__}) has no Hugging Face "
            "equivalent: no tokenizer files were written; users of the export must turn "
            "text into ids the way the recipe's tokenizer does"
        )
    out_dir = Path(out_dir)
    text = hf.to_str()
    with atomic_output(out_dir / "tokenizer.json", "w", encoding="utf-8") as f:
        f.write(text)
    spec = json.loads(text)
    byte_level_bpe = (spec.get("model") or {}).get("type") == "BPE" and (
        (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
    )
    eod = getattr(tokenizer, "eod_token", None) or hf.id_to_token(tokenizer.eod_id)
    tokenizer_config = {
        # GPT-2's tokenizer (fast: reads tokenizer.json) for a byte-level BPE, else the
        # generic fast tokenizer: both take every rule from tokenizer.json.
        "tokenizer_class": "GPT2Tokenizer" if byte_level_bpe else "PreTrainedTokenizerFast",
        "bos_token": eod,
        "eos_token": eod,
        "unk_token": eod,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    if max_length is not None:
        tokenizer_config["model_max_length"] = max_length
    write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    files = ["tokenizer.json", "tokenizer_config.json"]
    if byte_level_bpe:
        files += [Path(p).name for p in hf.model.save(str(out_dir))]  # vocab.json, merges.txt
    return files, None


def _type_hint(recipe: Any, slot: str) -> str | None:
    entry = recipe.components().get(slot)
    return None if entry is None else spec_of(entry.type_hint.value).name
