"""Learning-rate schedulers: the original README's StepLR and ConstantLR, and the usual LLM ones."""

from __future__ import annotations

import math

import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from pydantic_core import PydanticCustomError
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from llm_gym.registry import ComponentConfig, component


@component("scheduler", "StepLR", version=1)
class StepLRConfig(ComponentConfig):
    """Multiplies the learning rate by gamma every step_size steps."""

    step_size: int = Field(ge=1, description="steps between decays")
    gamma: float = Field(ge=0.0, description="decay factor")

    def build(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        return torch.optim.lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)


@component("scheduler", "ConstantLR", version=1)
class ConstantLRConfig(ComponentConfig):
    """Scales the learning rate by factor for the first total_iters steps."""

    factor: PositiveFloat = Field(description="scale during the first total_iters steps")
    total_iters: PositiveInt = Field(description="steps at the scaled rate")

    def build(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        return torch.optim.lr_scheduler.ConstantLR(optimizer, self.factor, self.total_iters)


@component("scheduler", "Constant", version=1)
class ConstantConfig(ComponentConfig):
    """Keeps the optimizer's learning rate unchanged, after an optional linear warmup."""

    warmup_steps: int = Field(0, ge=0, description="steps of linear warmup from 0")

    def build(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        warmup = self.warmup_steps
        return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))


class _WarmupThenDecay(ComponentConfig):
    """Linear warmup to the optimizer's rate, then a decay shaped by ``decay_shape``."""

    warmup_steps: int = Field(ge=0, description="steps of linear warmup from 0")
    decay_steps: PositiveInt = Field(description="step at which the decay ends (then flat)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final rate / peak rate")

    @model_validator(mode="after")
    def _decay_after_warmup(self) -> _WarmupThenDecay:
        warmup, decay = self.warmup_steps, self.decay_steps
        if decay <= warmup:
            # Say which values work: a shorter warmup (a tenth of the decay is usual) or a
            # later end of the decay.
            raise PydanticCustomError(
                "decay_before_warmup",
                "decay_steps ({decay}) must be greater than warmup_steps ({warmup}): set "
                "warmup_steps below {decay} (e.g. warmup_steps={suggested}) or decay_steps "
                "above {warmup}",
                {"decay": decay, "warmup": warmup, "suggested": decay // 10},
            )
        return self

    @staticmethod
    def decay_shape(progress: float) -> float:
        """Goes from 1 at progress 0 to 0 at progress 1."""
        raise NotImplementedError

    def build(self, optimizer: torch.optim.Optimizer) -> LRScheduler:
        return LambdaLR(optimizer, _warmup_then(self.warmup_steps, self.decay_steps,
                                                self.min_lr_ratio, self.decay_shape))


@component("scheduler", "WarmupCosine", version=1)
class WarmupCosineConfig(_WarmupThenDecay):
    """Linear warmup to the optimizer's rate, then cosine decay to min_lr_ratio of it."""

    @staticmethod
    def decay_shape(progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@component("scheduler", "WarmupLinear", version=1)
class WarmupLinearConfig(_WarmupThenDecay):
    """Linear warmup to the optimizer's rate, then linear decay to min_lr_ratio of it."""

    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final rate / peak rate")

    @staticmethod
    def decay_shape(progress: float) -> float:
        return 1.0 - progress


def _warmup_then(warmup: int, end: int, floor: float, shape):  # noqa: ANN001, ANN202
    """A LambdaLR factor: linear warmup, then shape(progress) (1 -> 0) mapped onto [floor, 1]."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / (end - warmup))
        return floor + (1.0 - floor) * shape(progress)

    return factor
