"""Model architectures of the built-in component set, as plain torch modules."""

from .gpt2 import GPT2
from .llama import Llama

__all__ = ["GPT2", "Llama"]
