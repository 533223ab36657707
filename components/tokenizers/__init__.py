"""Built-in tokenizers: byte-level, any Hugging Face tokenizer.json, GPT-2's BPE, and a
byte-level BPE trainer. Plain classes implementing ``llm_gym.data.tokenizer.Tokenizer``,
each declared to the registry by its ``...Config`` (kind ``tokenizer``)."""

from llm_gym.data.tokenizer_training import train_bpe_tokenizer

from .byte_level import ByteLevelTokenizer, ByteLevelTokenizerConfig
from .gpt2_bpe import GPT2BPETokenizer, GPT2BPETokenizerConfig, gpt2_vocab_files
from .hf_json import HFJsonTokenizer, HFJsonTokenizerConfig, HFTokenizer

__all__ = [
    "ByteLevelTokenizer",
    "ByteLevelTokenizerConfig",
    "GPT2BPETokenizer",
    "GPT2BPETokenizerConfig",
    "HFJsonTokenizer",
    "HFJsonTokenizerConfig",
    "HFTokenizer",
    "gpt2_vocab_files",
    "train_bpe_tokenizer",
]
