"""ValidationLoss: the loss on the recipe's eval_dataset, as trainer.eval_every runs it."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveInt

from llm_gym.evaluation.validation_loss import ValidationLoss
from llm_gym.registry import component
from llm_gym.runner.distributed import World
from llm_gym.runner.settings import TrainerSettings
from llm_gym_components.evaluators.common import EvaluatorConfig


@component("evaluator", "ValidationLoss", version=1)
class ValidationLossConfig(EvaluatorConfig):
    """Loss and perplexity over the same ``batches`` micro-batches of ``eval_dataset`` at
    every call (``trainer.eval_every`` is this evaluator, logged as eval_loss)."""

    name: str = Field("validation", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the records' key: eval/<name>/<metric> in metrics.jsonl")
    batches: PositiveInt = Field(8, description="micro-batches per evaluation")

    def build(self, eval_dataset: Any, loss: Any, world: World,
              trainer: TrainerSettings) -> ValidationLoss:
        return ValidationLoss(eval_dataset, loss, self.batches, trainer.micro_batch_size, world)
