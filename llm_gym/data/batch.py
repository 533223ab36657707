"""A batch that carries where documents start, beside its tokens.

A dataset with ``document_boundaries`` on hands out ``Batch(tokens, document_ids)``
instead of the bare ``[B, T + 1]`` token tensor: ``document_ids[b, t]`` is the index
(0, 1, 2, ... within row ``b``) of the document that input token ``t`` belongs to, so a
model can mask attention across documents and restart positions at each start. A dataset
without them keeps handing out the bare tensor, the very object it always did, so the
path every existing recipe takes gains no object and no copy.

``model_call`` is the one place that turns either kind into the model's arguments: the
trainer and the validation loss call ``model(inputs, **kwargs)`` with what it returns.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class Batch(NamedTuple):
    """Tokens ``[B, T + 1]`` (inputs ``[:, :-1]``, targets ``[:, 1:]``) and, for each
    input token, the index of its document within its row, ``[B, T]`` int64."""

    tokens: torch.Tensor
    document_ids: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(self.tokens.to(device, non_blocking=non_blocking),
                     self.document_ids.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return Batch(self.tokens.pin_memory(), self.document_ids.pin_memory())


def model_call(batch: torch.Tensor | Batch) -> tuple[torch.Tensor, torch.Tensor,
                                                      dict[str, Any]]:
    """``(inputs, targets, kwargs)`` for ``loss(model(inputs, **kwargs), targets)``:
    ``kwargs`` holds ``document_ids`` only when the batch carries them."""
    if isinstance(batch, Batch):
        tokens = batch.tokens
        return tokens[:, :-1], tokens[:, 1:], {"document_ids": batch.document_ids}
    return batch[:, :-1], batch[:, 1:], {}

