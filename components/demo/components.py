"""The demo tokenizer and dataset: what the gpt2-tiny recipe trains on, with no download."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llm_gym.data.packed_dataset import PackedMemMapDataset
from llm_gym.registry import ComponentConfig, component
from llm_gym_components.datasets.packed_tokens import open_packed
from llm_gym_components.tokenizers.hf_json import HFJsonTokenizer

from .cache import cache_dir, demo_pack, demo_tokenizer_file

# The order cache.cache_dir looks in (an absolute XDG_CACHE_HOME only, as the XDG spec says).
CACHE_DIR_DESCRIPTION = ("default: $LLM_GYM_DEMO_CACHE, else $XDG_CACHE_HOME/llm_gym/demo, "
                         "else ~/.cache/llm_gym/demo")


@component("tokenizer", "DemoBPE", version=1)
class DemoBPEConfig(ComponentConfig):
    """Byte-level BPE trained on the demo corpus (prepared once, then cached)."""

    vocab_size: int = Field(4096, ge=512, le=65536, description="BPE vocabulary size")
    corpus_mb: float = Field(8.0, gt=0, le=64, description="size of the demo corpus")
    cache_dir: str | None = Field(None, description=CACHE_DIR_DESCRIPTION)

    def build(self) -> HFJsonTokenizer:
        directory = cache_dir(self.cache_dir)
        return HFJsonTokenizer(demo_tokenizer_file(directory, self.corpus_mb, self.vocab_size))


@component("dataset", "DemoCorpus", version=1)
class DemoCorpusConfig(ComponentConfig):
    """The demo corpus packed with the recipe's tokenizer (prepared once, then cached)."""

    split: Literal["train", "val"] = "train"
    part: Literal["all", "stdlib", "packages"] = Field(
        "all", description="all of the corpus, or the documents of the standard library "
        "(stdlib) or of numpy and torch (packages) alone, e.g. to mix them")
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0,
                                description="last fraction of blocks kept for validation")
    corpus_mb: float = Field(8.0, gt=0, le=64, description="size of the demo corpus")
    cache_dir: str | None = Field(None, description=CACHE_DIR_DESCRIPTION)
    document_boundaries: bool = Field(
        False, description="hand the model, with each block, the index of every input "
        "token's document, for a model with attention_mask: document")

    def build(self, tokenizer: Any, world: Any, trainer: Any) -> PackedMemMapDataset:
        prefix = demo_pack(cache_dir(self.cache_dir), self.corpus_mb, tokenizer, self.part)
        return open_packed(str(prefix), self.split, self.val_fraction, world, trainer, tokenizer,
                           document_boundaries=self.document_boundaries)
