"""The two model families on gpt2-debug's data and batch: tests that a parallel layout
trains like one process run both."""

from __future__ import annotations

from pathlib import Path

from llm_gym.recipes.loading import load_recipe

# Llama with every part a tensor-parallel plan has: grouped-query attention (2 key/value
# heads for 4 query heads), QK-norm (a per-head norm inside attention) and a tied head.
LLAMA = ("{type_hint: Llama, config: {vocab_size: 257, max_seq_len: 32, n_embd: 32, "
         "n_layer: 2, n_head: 4, n_kv_head: 2, qk_norm: true, tie_embeddings: true, "
         "multiple_of: 16}}")


def family_recipe(family: str, tmp_path: Path) -> tuple[str, list[str]]:
    """gpt2-debug, or the same recipe with the small Llama above as its model (written
    under ``tmp_path``; run it with ``allow_drift``: it carries no pins)."""
    if family == "gpt2":
        return "gpt2-debug", []
    text = Path(load_recipe("gpt2-debug").ref.path).read_text()
    start = text.index("model:\n")
    end = text.index("\n\n", start)
    path = tmp_path / "llama-debug.yaml"
    path.write_text(text[:start] + f"model: {LLAMA}" + text[end:text.index("pins:")])
    return str(path), []
