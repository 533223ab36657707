"""Next-token cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from llm_gym.registry import ComponentConfig, component


class CrossEntropyLoss(torch.nn.Module):
    """Mean cross-entropy of logits ``[B, T, V]`` against target ids ``[B, T]``."""

    def __init__(self, ignore_index: int, label_smoothing: float) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        # Under tensor parallelism the trainer may hand this loss logits cut by vocabulary
        # (torch's loss parallel), which supports no label smoothing.
        self.vocab_parallel = label_smoothing == 0

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Compute in fp32 whatever the model's dtype: log-softmax over 50k classes in bf16
        # loses the small probabilities the gradient depends on.
        return F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(),
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )


@component("loss", "CrossEntropy", version=1)
class CrossEntropyConfig(ComponentConfig):
    """Next-token cross-entropy, computed in fp32."""

    ignore_index: int = Field(-100, description="target id that contributes no loss")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    def build(self) -> CrossEntropyLoss:
        return CrossEntropyLoss(self.ignore_index, self.label_smoothing)
