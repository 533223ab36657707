"""A packed token file (``llm_gym tools pack``) as the runner's dataset."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.registry import ComponentConfig, component


@component("dataset", "PackedTokens", version=1)
class PackedTokensConfig(ComponentConfig):
    """Blocks of seq_len + 1 tokens from PREFIX.bin/.idx, shuffled per epoch, sharded by rank."""

    path: str = Field(description="prefix given to `llm_gym tools pack --out`")
    split: Literal["train", "val"] = Field("train", description="which part of the blocks")
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                description="last fraction of blocks kept for validation")

    def build(self, world: Any, trainer: Any, tokenizer: Any = None) -> PackedMemMapDataset:
        return open_packed(self.path, self.split, self.val_fraction, world, trainer, tokenizer)


def open_packed(path: str, split: str, val_fraction: float, world: Any, trainer: Any,
                tokenizer: Any) -> PackedMemMapDataset:
    """The dataset for this rank; refuses a pack made with another tokenizer than ``tokenizer``."""
    return PackedMemMapDataset(
        path, trainer.seq_len, split=split, val_fraction=val_fraction, seed=trainer.seed,
        rank=world.rank, world_size=world.world_size,
        tokenizer_fingerprint=tokenizer.fingerprint() if tokenizer is not None else None,
    )
