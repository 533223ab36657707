"""The demo data every fresh machine has: docstring prose -> BPE tokenizer -> packed tokens."""
