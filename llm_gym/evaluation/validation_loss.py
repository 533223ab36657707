"""The loss on the recipe's own held-out token blocks (``eval_dataset``): the same
``batches`` micro-batches at every evaluation, each rank its share, averaged over ranks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from llm_gym.data.batch import model_call
from llm_gym.runner.distributed import World, all_reduce_mean


class ValidationLoss:
    """The evaluator: ``loss`` and ``perplexity`` (``trainer.eval_every`` runs it too, its
    records keyed ``eval_loss`` and ``eval_perplexity`` as before evaluators existed)."""

    def __init__(self, data: Any, loss_fn: Callable[..., torch.Tensor], batches: int,
                 micro_batch_size: int, world: World) -> None:
        self.data, self.loss_fn, self.world = data, loss_fn, world
        self.batches, self.micro_batch_size = batches, micro_batch_size
        self._start = data.state_dict()  # rewound to before every evaluation

    @torch.no_grad()
    def evaluate(self, model: nn.Module, should_stop: Callable[[], bool]
                 ) -> dict[str, float] | None:
        self.data.load_state_dict(self._start)
        model.eval()
        total = torch.zeros((), device=self.world.device)
        for _ in range(self.batches):
            if should_stop():
                return None
            batch = self.data.next_batch(self.micro_batch_size).to(self.world.device)
            inputs, targets, kwargs = model_call(batch)  # kwargs: document_ids, if any
            total += self.loss_fn(model(inputs, **kwargs), targets)
        loss = all_reduce_mean(total / self.batches, self.world).item()
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 50 else math.inf}
