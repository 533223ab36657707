"""``llm_gym export hf``: a run's model as a Hugging Face directory transformers loads.

Writes ``config.json`` and ``model.safetensors`` (fp32, Hugging Face's names and layout,
from the architecture's adapter) and, when the recipe's tokenizer is backed by Hugging Face
``tokenizers``, ``tokenizer.json`` + ``tokenizer_config.json`` (plus ``vocab.json`` and
``merges.txt`` for a byte-level BPE, which the slow GPT-2 tokenizer reads).

The files are written as one (``llm_gym.hf.directory_output``): a failed export leaves the
target as it was. A non-empty target needs ``force``, and even then only the files the
export writes are replaced; nothing else in it is touched. The run directory (and
anything in it) and the directories the run's recipe reads from are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.hf.adapter import adapter_for_model
from llm_gym.hf.directory_output import directory_output
from llm_gym.hf.files import CONFIG, SAFETENSORS, write_model_dir
from llm_gym.hf.tokenizer_files import TOKENIZER_FILES, write_tokenizer_files
from llm_gym.model_contract import as_language_model
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.component import spec_of
from llm_gym.runner.loading_model import load_run_model, locate

NOT_EMPTY = ("pass --force to replace the files an export writes (config.json, "
             "model.safetensors and the tokenizer's files); nothing else in it is touched")


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path | None
    files: list[str]
    notes: list[str] = field(default_factory=list)


def export_hf(
    source: Path, out_dir: Path, *, force: bool = False, registry: ResolverRegistry | None = None
) -> ExportResult:
    """Export the model of ``source`` (a run directory or a checkpoint) to ``out_dir``.

    ``force`` allows a non-empty ``out_dir``: the files written replace theirs there.
    """
    out_dir = Path(out_dir)
    run_dir, _ = locate(source)
    _refuse_inside(out_dir, run_dir.resolve(), "the run directory")
    with directory_output(out_dir, replace_files=force, refusal=NOT_EMPTY) as output:
        run = load_run_model(source, registry=registry)
        for where, path in _recipe_paths(run.recipe):
            _refuse_read_by_recipe(output.target, path, where)
        adapter = adapter_for_model(run.registry, run.model)
        eod_id = getattr(run.tokenizer, "eod_id", None)
        config, tensors = adapter.to_hf(run.model, eod_id=eod_id)
        write_model_dir(output.path, config, tensors)
        written, note = write_tokenizer_files(
            run.tokenizer, output.path, name=_type_hint(run.recipe, "tokenizer"),
            max_length=as_language_model(run.model).max_seq_len,
        )
    files = [CONFIG, SAFETENSORS, *written]
    notes = [*run.notes, *([note] if note else [])]
    if output.replaced:
        notes.append(f"replaced in {output.target}: {', '.join(output.replaced)}")
    for stale in sorted(set(TOKENIZER_FILES) & set(output.kept)):
        notes.append(f"kept {output.target / stale}, which this export did not write: "
                     "transformers will read it as this model's tokenizer file; remove it "
                     "if it belongs to another model")
    return ExportResult(output.target, run.checkpoint, files, notes)


def _refuse_inside(out_dir: Path, directory: Path, what: str) -> None:
    out = out_dir.resolve()
    if out == directory or directory in out.parents:
        raise UserError(f"{out_dir}: is {'' if out == directory else 'inside '}{what} "
                        f"{directory}; export to a directory of its own")


def _refuse_read_by_recipe(out: Path, path: Path, where: str) -> None:
    read = path.resolve()
    if read == out or out in read.parents:
        raise UserError(f"{out}: the run's recipe reads {path} from it ({where}); an export "
                        "there could replace it. Export to a directory of its own")


def _recipe_paths(recipe: Any) -> Iterator[tuple[str, Path]]:
    """Every path in the recipe's component configs, with its YAML path."""
    def walk(value: Any, where: str) -> Iterator[tuple[str, Path]]:
        if isinstance(value, Path):
            yield where, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{where}.{key}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from walk(item, f"{where}[{i}]")

    for slot, entry in recipe.components().items():
        if entry is not None:
            yield from walk(entry.config.model_dump(), f"{slot}.config")


def _type_hint(recipe: Any, slot: str) -> str | None:
    entry = recipe.components().get(slot)
    return None if entry is None else spec_of(entry.type_hint.value).name
