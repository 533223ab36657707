"""Log-probabilities of continuations given contexts, batched and padded.

A request is ``(context ids, continuation ids)``; its score is the summed log-probability
of the continuation's tokens, each given everything before it. Inputs longer than the
model's context are cut from the left (the continuation is kept), as lm-evaluation-harness
does, and reported as truncated. Sequences of one batch are padded on the right: the model
is causal, so padding after a sequence's last real token changes none of its logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Any valid id: padded positions are never read back.
PAD_ID = 0


@dataclass(frozen=True)
class Window:
    """One sequence to run: ``inputs`` to the model and how many of its last positions
    are scored (their targets are the last ``scored`` entries of ``targets``)."""

    inputs: list[int]
    targets: list[int]
    scored: int
    truncated: bool


def continuation_window(context: Sequence[int], continuation: Sequence[int],
                        max_len: int) -> Window:
    """The model's input for scoring ``continuation`` after ``context``: the last
    ``max_len + 1`` tokens of both, less the last one."""
    full = [*context, *continuation]
    kept = full[-(max_len + 1):]
    return Window(kept[:-1], kept[1:], min(len(continuation), len(kept) - 1),
                  truncated=len(full) > max_len + 1)


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> list[Window]:
    """Windows that score every token of a document once, the first one given ``prefix``
    (the end-of-document id) and every later one as much context as fits (the
    harness's rolling log-likelihood with a context of at least one token)."""
    seq = [prefix, *tokens]
    windows = []
    start = 1
    while start < len(seq):
        end = min(start + max_len, len(seq))
        first = max(0, end - 1 - max_len)
        windows.append(Window(seq[first:end - 1], seq[first + 1:end], end - start, False))
        start = end
    return windows


@torch.no_grad()
def score_windows(model: nn.Module, windows: Sequence[Window],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over ``windows`` (padded to the longest): per window, the summed
    log-probability of its scored tokens (float64) and whether each scored token is the
    model's greedy choice (all of them: bool)."""
    longest = max(len(w.inputs) for w in windows)
    inputs = torch.full((len(windows), longest), PAD_ID, dtype=torch.long)
    for i, w in enumerate(windows):
        inputs[i, : len(w.inputs)] = torch.tensor(w.inputs)
    logits = model(inputs.to(device))
    sums = torch.zeros(len(windows), dtype=torch.float64)
    greedy = torch.zeros(len(windows), dtype=torch.bool)
    for i, w in enumerate(windows):
        end = len(w.inputs)
        # fp32 (or wider) log-softmax: bf16 logits would round the sums.
        rows = logits[i, end - w.scored : end].float().log_softmax(-1)
        targets = torch.tensor(w.targets[-w.scored:], device=rows.device)
        sums[i] = rows.gather(-1, targets[:, None]).sum().double().cpu()
        greedy[i] = bool((rows.argmax(-1) == targets).all())
    return sums, greedy
