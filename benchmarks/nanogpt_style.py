"""A training loop written the way nanoGPT's ``train.py`` is: the outside yardstick.

Written here from nanoGPT's public description (not its code), to compare the runner
with what a researcher would otherwise run, not with a loop built from the runner's own
choices (``plain_loops.py`` is that):

- the model is its own ``Block`` / ``CausalSelfAttention`` / ``MLP``: a LayerNorm with an
  optional bias, ``F.scaled_dot_product_attention`` with ``is_causal``, the exact
  (erf) GELU, the head tied to the token embedding, N(0, 0.02) init with the residual
  projections scaled by 1/sqrt(2 * n_layer), dropout modules at p = 0, and the loss
  computed inside ``forward``;
- data: random offsets into a uint16 token array memory-mapped afresh for every batch,
  ``torch.from_numpy(...)`` of int64 copies, ``.to(device)``;
- AdamW over two groups (weight decay on tensors with dim >= 2 only), with torch's
  default kernel on a CPU (nanoGPT asks for the fused kernel on CUDA only);
- the learning rate set in every group every step (warm-up then cosine), gradient
  clipping at 1.0, ``zero_grad(set_to_none=True)``, no compile, and ``loss.item()`` at
  logging steps.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llm_gym.data.packed import HEADER_SIZE


@dataclass(frozen=True)
class Shape:
    vocab_size: int = 4096
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True


class LayerNorm(nn.Module):
    """LayerNorm whose bias can be switched off (nn.LayerNorm could not, once)."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.c_attn = nn.Linear(s.n_embd, 3 * s.n_embd, bias=s.bias)
        self.c_proj = nn.Linear(s.n_embd, s.n_embd, bias=s.bias)
        self.attn_dropout = nn.Dropout(s.dropout)
        self.resid_dropout = nn.Dropout(s.dropout)
        self.n_head, self.n_embd, self.dropout = s.n_head, s.n_embd, s.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0,
            is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.c_fc = nn.Linear(s.n_embd, 4 * s.n_embd, bias=s.bias)
        self.gelu = nn.GELU()  # exact, erf-based
        self.c_proj = nn.Linear(4 * s.n_embd, s.n_embd, bias=s.bias)
        self.dropout = nn.Dropout(s.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(s.n_embd, s.bias)
        self.attn = CausalSelfAttention(s)
        self.ln_2 = LayerNorm(s.n_embd, s.bias)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoStyleGPT(nn.Module):
    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.shape = s
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(s.vocab_size, s.n_embd),
            wpe=nn.Embedding(s.block_size, s.n_embd),
            drop=nn.Dropout(s.dropout),
            h=nn.ModuleList([Block(s) for _ in range(s.n_layer)]),
            ln_f=LayerNorm(s.n_embd, s.bias),
        ))
        self.lm_head = nn.Linear(s.n_embd, s.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * s.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=-1)

    def configure_optimizer(self, weight_decay: float, lr: float,
                            betas: tuple[float, float], device_type: str) -> torch.optim.AdamW:
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)


def get_batch(bin_path: Path, n_tokens: int, block_size: int, batch_size: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the memory-mapped tokens, mapped again each call."""
    data = np.memmap(bin_path, dtype=np.uint16, mode="r", offset=HEADER_SIZE, shape=(n_tokens,))
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64))
                     for i in ix])
    return x.to(device), y.to(device)


def _lr(step: int, lr: float, warmup: int, decay: int, min_lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def nanogpt_tokens_per_s(bin_path: Path, n_tokens: int, *, steps: int, log_every: int,
                         batch_size: int = 16, shape: Shape = Shape(), lr: float = 3e-3,
                         seed: int = 1337) -> float:
    """Median tokens/s over the logging intervals after the first (the warm-up)."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    model = NanoStyleGPT(shape).to(device)
    optimizer = model.configure_optimizer(0.1, lr, (0.9, 0.95), device.type)
    x, y = get_batch(bin_path, n_tokens, shape.block_size, batch_size, device)
    times, start = [], time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, lr, warmup=steps // 10, decay=steps, min_lr=lr / 10)
        loss = model(x, y)
        x, y = get_batch(bin_path, n_tokens, shape.block_size, batch_size, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0:
            loss.item()
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
    return batch_size * shape.block_size * log_every / statistics.median(times[1:])


if __name__ == "__main__":
    # The loop in a process of its own, as nanoGPT's train.py runs: nothing the runner set
    # up in the benchmark's process (threads, allocator settings, caches) carries over.
    import sys

    path, tokens, steps, log_every, threads = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    print(nanogpt_tokens_per_s(Path(path), int(tokens), steps=int(steps),
                               log_every=int(log_every)))
