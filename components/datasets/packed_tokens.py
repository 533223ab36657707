"""A packed token file (``llm_gym tools pack``) as the runner's dataset."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llm_gym.data.document_ids import document_starts
from llm_gym.data.packed import PackedTokens, pack_paths
from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.errors import UserError
from llm_gym.registry import ComponentConfig, component


@component("dataset", "PackedTokens", version=1)
class PackedTokensConfig(ComponentConfig):
    """Blocks of seq_len + 1 tokens from PREFIX.bin/.idx, shuffled per epoch, sharded by rank."""

    path: str = Field(description="what `llm_gym tools pack --out` wrote: a pack's prefix (of"
                      " PREFIX.bin/.idx), or a directory of shards (--shard-tokens) or its"
                      " manifest.json")
    split: Literal["train", "val"] = Field("train", description="which part of the blocks")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                description="last fraction of blocks kept for validation")
    document_boundaries: bool = Field(
        False, description="hand the model, with each block, the index of every input "
        "token's document (from the pack's document index), for a model that masks "
        "attention at document boundaries; in a Mixture, set it on the Mixture instead")

    def preflight(self, trainer: Any = None, model: Any = None) -> Iterator[str]:
        """The pack's two files are there, their headers agree, the split has a block of
        trainer.seq_len + 1 tokens, and the model embeds every id the pack holds."""
        yield from check_pack(self.path, self.split, self.val_fraction, trainer, model,
                              document_boundaries=self.document_boundaries)

    def document_boundary_problems(self) -> Iterator[str]:
        """What stops the pack from saying where its documents start (a damaged document
        index), for a Mixture that hands its sources' boundaries on."""
        try:
            packed = PackedTokens.open(self.path)
        except UserError:
            return  # the pack's own preflight names it
        try:
            document_starts(packed)
        except UserError as exc:
            yield f"path: {exc.message}"

    def build(self, world: Any, trainer: Any, tokenizer: Any = None) -> PackedMemMapDataset:
        return open_packed(self.path, self.split, self.val_fraction, world, trainer, tokenizer,
                           document_boundaries=self.document_boundaries)


def open_packed(path: str, split: str, val_fraction: float, world: Any, trainer: Any,
                tokenizer: Any, *, document_boundaries: bool = False) -> PackedMemMapDataset:
    """The dataset for this rank; refuses a pack made with another tokenizer than ``tokenizer``."""
    return PackedMemMapDataset(
        path, trainer.seq_len, split=split, val_fraction=val_fraction, seed=trainer.seed,
        rank=world.rank, world_size=world.world_size,
        tokenizer_fingerprint=tokenizer.fingerprint() if tokenizer is not None else None,
        document_boundaries=document_boundaries,
    )


def check_pack(path: str, split: str, val_fraction: float, trainer: Any,
               model: Any, *, document_boundaries: bool = False) -> Iterator[str]:
    """Problems with the pack at ``path``, from its headers and sizes alone."""
    for file in pack_paths(path):
        if file.exists() and not file.is_file():
            yield f"path: {file} is not a regular file"
            return
    hint = ""
    if path.endswith((".bin", ".idx")):
        hint = f"; path is the prefix, without .bin/.idx: path: {path[:-4]}"
    elif Path(path).is_dir():
        if not (Path(path) / "manifest.json").exists():
            hint = (f"; {path} is a directory: path is the PREFIX of PREFIX.bin and PREFIX.idx,"
                    " or a directory of shards that holds a manifest.json")
    elif not path.endswith(".json"):
        if not pack_paths(path)[0].exists():
            hint = f" (make it with `llm_gym tools pack CORPUS.jsonl --out {path} ...`)"
    try:
        packed = PackedTokens.open(path)
    except UserError as exc:
        yield f"path: {exc.message}{hint}"
        return
    if document_boundaries:
        try:
            document_starts(packed)
        except UserError as exc:
            yield f"document_boundaries: {exc.message}"
    seq_len = getattr(trainer, "seq_len", None)
    if seq_len is not None:
        total = max(packed.n_tokens - 1, 0) // seq_len
        n_val = math.ceil(total * val_fraction)
        count = total - n_val if split == "train" else n_val
        if count < 1:
            yield (f"path: {path} holds {packed.n_tokens} tokens: its {split} split (val_fraction"
                   f" {val_fraction}) has no block of trainer.seq_len + 1 = {seq_len + 1} tokens;"
                   " pack more text, or lower trainer.seq_len")
    model_vocab = getattr(model, "vocab_size", None)
    if isinstance(model_vocab, int) and model_vocab < packed.vocab_size:
        yield (f"path: {path} was packed with a {packed.vocab_size}-id tokenizer, more than "
               f"model.config.vocab_size ({model_vocab}) embeds; set "
               f"model.config.vocab_size={packed.vocab_size} (or more)")
