"""Built-in optimizers and schedulers: the numbers they produce."""

from __future__ import annotations

import math

import pytest
import torch

from llm_gym_components.optim.optimizers import AdamWConfig, SGDConfig
from llm_gym_components.optim.schedulers import (
    ConstantConfig,
    WarmupCosineConfig,
    WarmupLinearConfig,
)


def _lrs(config, steps: int, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)
    scheduler = config.build(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_cosine_rises_linearly_then_decays_to_the_floor():
    lrs = _lrs(WarmupCosineConfig(warmup_steps=4, decay_steps=14, min_lr_ratio=0.1), 20)
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14:] == pytest.approx([0.1] * 6)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_warmup_linear_and_constant():
    lrs = _lrs(WarmupLinearConfig(warmup_steps=0, decay_steps=10), 12)
    assert lrs[:3] == pytest.approx([1.0, 0.9, 0.8]) and lrs[10:] == pytest.approx([0.0, 0.0])
    assert _lrs(ConstantConfig(warmup_steps=1), 4) == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_decay_must_end_after_warmup():
    with pytest.raises(ValueError, match=r"decay_steps \(10\) must be greater than "
                       r"warmup_steps \(10\): set warmup_steps below 10 \(e.g. warmup_steps=1\)"):
        WarmupCosineConfig(warmup_steps=10, decay_steps=10)


def test_adamw_decays_matrices_only_and_uses_the_fused_kernel_on_cpu():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = AdamWConfig(lr=1e-3, weight_decay=0.1).build(model)
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # Linear bias, LayerNorm weight and bias
    assert decay["fused"] is True and not decay["foreach"]
    with torch.device("meta"):  # no fused kernel there (the planning dry run builds on meta)
        on_meta = torch.nn.Linear(4, 4)
    assert AdamWConfig(lr=1e-3).build(on_meta).param_groups[0]["foreach"] is True
    forced = AdamWConfig(lr=1e-3, implementation="foreach").build(model).param_groups[0]
    assert forced["foreach"] is True and not forced["fused"]
    assert SGDConfig(lr=0.1).build(model).param_groups[0]["lr"] == 0.1
