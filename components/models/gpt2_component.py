"""The GPT-2 model as a component: sizes from the recipe, the module from gpt2.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, PositiveInt, model_validator

from llm_gym.recipes.preflight import (
    document_mask_matches_datasets,
    embedding_covers_tokenizer,
)
from llm_gym.registry import ComponentConfig, component

from .gpt2 import GPT2


@component("model", "GPT2", version=1)
class GPT2Config(ComponentConfig):
    """GPT-2: pre-LayerNorm decoder, tied LM head, GPT-2 initialisation."""

    vocab_size: PositiveInt = Field(description="token ids are < vocab_size")
    n_positions: PositiveInt = Field(description="longest sequence (position embeddings)")
    n_embd: PositiveInt = Field(description="width of the residual stream")
    n_layer: PositiveInt = Field(description="transformer blocks")
    n_head: PositiveInt = Field(description="attention heads; must divide n_embd")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")
    bias: bool = Field(True, description="biases in Linear and LayerNorm layers")
    attention_mask: Literal["causal", "document"] = Field(
        "causal", description="document: attention stays inside each packed document and "
        "positions restart at its start (needs document_boundaries on the datasets)")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPT2Config:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self

    def preflight(self, trainer: Any = None, tokenizer: Any = None, train_dataset: Any = None,
                  eval_dataset: Any = None) -> Iterator[str]:
        """Sequences fit the position embeddings; every token id has an embedding row; the
        datasets hand over document boundaries exactly when the model masks by them."""
        yield from document_mask_matches_datasets(self.attention_mask, train_dataset,
                                                  eval_dataset)
        seq_len = getattr(trainer, "seq_len", None)
        if seq_len is not None and seq_len > self.n_positions:
            yield (f"n_positions: {self.n_positions}, shorter than trainer.seq_len ({seq_len}):"
                   f" positions past {self.n_positions} have no embedding; set "
                   f"model.config.n_positions={seq_len} or trainer.seq_len={self.n_positions}")
        yield from embedding_covers_tokenizer(self.vocab_size, tokenizer)

    def build(self) -> GPT2:
        return GPT2(**self.model_dump())
