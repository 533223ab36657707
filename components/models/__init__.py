"""Model architectures of the built-in component set, as plain torch modules."""

from .gpt2 import GPT2

__all__ = ["GPT2"]
