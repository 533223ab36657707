"""The Llama-style model as a component: sizes from the recipe, the module from llama.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from llm_gym.recipes.preflight import (
    document_mask_matches_datasets,
    embedding_covers_tokenizer,
)
from llm_gym.registry import ComponentConfig, component

from .llama import Llama


@component("model", "Llama", version=1)
class LlamaConfig(ComponentConfig):
    """Llama-style decoder: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases."""

    vocab_size: PositiveInt = Field(description="token ids are < vocab_size")
    max_seq_len: PositiveInt = Field(description="longest sequence (length of the RoPE tables)")
    n_embd: PositiveInt = Field(description="width of the residual stream")
    n_layer: PositiveInt = Field(description="transformer blocks")
    n_head: PositiveInt = Field(description="query heads; must divide n_embd into even head "
                                            "dimensions")
    n_kv_head: PositiveInt | None = Field(
        None, description="key/value heads, each shared by n_head / n_kv_head query heads "
                          "(grouped-query attention); must divide n_head; null: n_head")
    ffn_multiplier: PositiveFloat = Field(
        1.0, description="scales the SwiGLU hidden size, 2/3 of 4 x n_embd")
    multiple_of: PositiveInt = Field(256, description="the SwiGLU hidden size is rounded up "
                                                      "to a multiple of this")
    rope_theta: PositiveFloat = Field(10000.0, description="RoPE base: longer wavelengths as "
                                                           "it grows")
    norm_eps: PositiveFloat = Field(1e-5, description="epsilon of every RMSNorm")
    qk_norm: bool = Field(False, description="RMSNorm on each query and key head before RoPE")
    tie_embeddings: bool = Field(False, description="the LM head shares the token embedding")
    init_std: PositiveFloat = Field(0.02, description="standard deviation of the weights at "
                                                      "initialisation")
    attention_mask: Literal["causal", "document"] = Field(
        "causal", description="document: attention stays inside each packed document and "
        "RoPE positions restart at its start (needs document_boundaries on the datasets)")

    @model_validator(mode="after")
    def _heads_fit(self) -> LlamaConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"the head dimension n_embd / n_head = {self.n_embd // self.n_head}"
                             " is odd; RoPE rotates pairs of dimensions: choose an even one")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head "
                             f"({self.n_kv_head})")
        return self

    def preflight(self, trainer: Any = None, tokenizer: Any = None, train_dataset: Any = None,
                  eval_dataset: Any = None) -> Iterator[str]:
        """Sequences fit the RoPE tables; every token id has an embedding row; the datasets
        hand over document boundaries exactly when the model masks by them."""
        yield from document_mask_matches_datasets(self.attention_mask, train_dataset,
                                                  eval_dataset)
        seq_len = getattr(trainer, "seq_len", None)
        if seq_len is not None and seq_len > self.max_seq_len:
            yield (f"max_seq_len: {self.max_seq_len}, shorter than trainer.seq_len ({seq_len}); "
                   f"set model.config.max_seq_len={seq_len} or trainer.seq_len="
                   f"{self.max_seq_len}")
        yield from embedding_covers_tokenizer(self.vocab_size, tokenizer)

    def build(self) -> Llama:
        return Llama(**self.model_dump())
