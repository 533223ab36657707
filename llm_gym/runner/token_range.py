"""A batch whose token ids the model cannot embed, named as a data problem.

A pack's header says how many ids its tokenizer has, and validation checks that the model
embeds them all; an id past them can still reach the model from damaged bytes (a pack
changed after it was written: ``PackedTokens.verify`` finds that). The embedding then
fails with a bare ``IndexError`` deep in torch. ``out_of_vocabulary`` turns it into an
error that says what is wrong with the data, checked only once the step has failed, so
the loop pays nothing for it.
"""

from __future__ import annotations

import torch

from llm_gym.errors import UserError


def out_of_vocabulary(inputs: torch.Tensor, vocab_size: int, step: int) -> UserError | None:
    """The error for ``inputs`` holding an id outside ``0 .. vocab_size - 1``, or None
    when they do not (the failure was something else)."""
    if inputs.numel() == 0:
        return None
    low, high = int(inputs.min()), int(inputs.max())
    if 0 <= low and high < vocab_size:
        return None
    wrong = low if low < 0 else high
    return UserError(
        f"step {step}: the training batch holds token id {wrong}, outside the model's"
        f" vocabulary (ids 0..{vocab_size - 1}): the data is damaged or was packed with"
        " another tokenizer; check the pack with PackedTokens.open(path).verify(), or"
        " pack it again"
    )
