"""Optimizers: AdamW with decay / no-decay groups, and SGD."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveFloat

from llm_gym.registry import ComponentConfig, component

# Devices with a fused AdamW kernel in torch that the runner trains on. Version 2 made
# "auto" pick it on the CPU as well: about 4x faster than foreach there, and the same
# path (skipping a non-finite update on the device) as on a GPU.
FUSED_DEVICES = frozenset({"cuda", "cpu"})


@component("optimizer", "AdamW", version=2)
class AdamWConfig(ComponentConfig):
    """AdamW; weight decay only on matrices (not on biases, norms), fused or foreach kernels."""

    lr: PositiveFloat = Field(description="peak learning rate")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam's beta1, beta2")
    eps: PositiveFloat = 1e-8
    weight_decay: float = Field(0.1, ge=0.0, description="applied to parameters with dim >= 2")
    implementation: Literal["auto", "fused", "foreach", "for-loop"] = Field(
        "auto", description="auto: fused on CUDA and CPU, foreach elsewhere (e.g. meta)"
    )

    def build(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        choice = self.implementation
        if choice == "auto":
            fusable = all(p.device.type in FUSED_DEVICES for p in params)
            choice = "fused" if fusable else "foreach"
        kernel = {"fused": {"fused": True}, "foreach": {"foreach": True},
                  "for-loop": {"foreach": False}}[choice]
        return torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, **kernel)


@component("optimizer", "SGD", version=1)
class SGDConfig(ComponentConfig):
    """Stochastic gradient descent with optional momentum."""

    lr: PositiveFloat = Field(description="learning rate")
    momentum: float = Field(0.0, ge=0.0)
    weight_decay: float = Field(0.0, ge=0.0)

    def build(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay, foreach=True)
