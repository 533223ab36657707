"""A third-party model plugin, registered in-process: the core must plan, shard, sample and
measure it through the model contract alone, knowing nothing of it.

``ToyLM`` is deliberately unlike GPT-2: no attention (each token's logits depend on that
token only), blocks of a pre-LayerNorm 2x MLP, an untied head, other attribute names.
``Incomplete`` lacks two parts of the contract.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import PositiveInt
from torch import nn

from llm_gym.registry import ComponentConfig, component, hookimpl


class ToyBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class ToyLM(nn.Module):
    # Set in __init__; annotated here so that `recipe validate` finds them on the class.
    vocab_size: int
    max_seq_len: int

    def __init__(self, vocab: int, width: int, depth: int, longest: int) -> None:
        super().__init__()
        self.vocab_size, self.max_seq_len, self.width = vocab, longest, width
        self.embed = nn.Embedding(vocab, width)
        self.stack = nn.ModuleList(ToyBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, vocab, bias=False)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.stack)

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.stack:
            x = block(x)
        return self.head(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.embed.weight.numel()

    def flops_per_token(self, seq_len: int) -> int:
        return 6 * self.num_params()  # no attention: nothing grows with the length

    def block_activation_bytes(self, dtype: torch.dtype, *, checkpointed: bool) -> int:
        # LayerNorm input and output (up's input), its fp32 mean and rstd, and the ReLU
        # output, which is all ReLU's backward needs and down's input.
        if checkpointed:
            return self.width * dtype.itemsize
        return (2 * self.width + 2 * self.width) * dtype.itemsize + 2 * 4

    def root_activation_bytes(self, dtype: torch.dtype) -> int:
        return 8 + self.width * dtype.itemsize  # the token id, the head's input

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits = self(input_ids[:, -self.max_seq_len:])[:, -1]
            if temperature == 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)
            input_ids = torch.cat([input_ids, next_id], dim=1)
        return input_ids


class Incomplete(nn.Module):
    """Blocks and a forward, but no FLOPs count nor memory model."""

    vocab_size: int
    max_seq_len: int

    def __init__(self) -> None:
        super().__init__()
        self.vocab_size, self.max_seq_len = 257, 32
        self.stack = nn.ModuleList([nn.Linear(4, 4)])

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.stack)

    def init_weights(self) -> None: ...

    def num_params(self) -> int:
        return 20

    def root_activation_bytes(self, dtype: torch.dtype) -> int:
        return 0

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        return input_ids


@component("model", "ToyLM", version=1)
class ToyLMConfig(ComponentConfig):
    vocab_size: PositiveInt
    width: PositiveInt
    depth: PositiveInt
    longest: PositiveInt

    def build(self) -> ToyLM:
        return ToyLM(self.vocab_size, self.width, self.depth, self.longest)


@component("model", "Incomplete", version=1)
class IncompleteConfig(ComponentConfig):
    def build(self) -> Incomplete:
        return Incomplete()


@component("model", "Undeclared", version=1)
class UndeclaredConfig(ComponentConfig):
    def build(self):  # noqa: ANN201 -- what the test is about: no declared class
        return Incomplete()


class ToyPlugin:
    @hookimpl
    def llm_gym_components(self) -> list[type]:
        return [ToyLMConfig, IncompleteConfig, UndeclaredConfig]


def recipe_with_model(tmp_path: Path, type_hint: str, config: str = "{}") -> Path:
    """gpt2-debug with its model entry replaced, written to ``tmp_path``; unpinned."""
    from llm_gym.recipes.loading import load_recipe

    text = Path(load_recipe("gpt2-debug").ref.path).read_text()
    start, end = text.index("model:\n"), text.index("tokenizer:\n")
    text = text[:start] + f"model:\n  type_hint: {type_hint}\n  config: {config}\n\n" + text[end:]
    text = text[:text.index("pins:")]
    path = tmp_path / f"{type_hint}.yaml"
    path.write_text(text)
    return path


TOY_CONFIG = "{vocab_size: 257, width: 32, depth: 3, longest: \"${trainer.seq_len}\"}"
