"""Multiple-choice completion (HellaSwag and the like), scored as lm-evaluation-harness does.

Each choice is scored by the summed log-probability of its tokens given the context; the
prediction is the best choice (``acc``) or the best per byte of the choice's text
(``acc_norm``, which keeps long endings from losing for being long). All choices of an
example run in one forward pass. Context and choice are tokenised apart (the choice with
the delimiter in front: ``" " + ending``), so a choice's tokens never depend on the
context's last word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llm_gym.data.tokenizer import Tokenizer
from llm_gym.evaluation.scoring import continuation_window, score_windows
from llm_gym.evaluation.sharding import shard_passes, sum_over_ranks
from llm_gym.evaluation.task_files import ChoiceExample
from llm_gym.model_contract import as_language_model
from llm_gym.runner.distributed import World


@dataclass(frozen=True)
class EncodedExample:
    context: list[int]
    choices: list[list[int]]
    choice_bytes: list[int]  # UTF-8 length of each choice's text, for acc_norm
    answer: int


@dataclass(frozen=True)
class ExampleScore:
    logprobs: list[float]  # per choice
    choice_bytes: list[int]
    answer: int
    truncated: bool

    @property
    def predicted(self) -> int:
        return max(range(len(self.logprobs)), key=self.logprobs.__getitem__)

    @property
    def predicted_norm(self) -> int:
        per_byte = [lp / n for lp, n in zip(self.logprobs, self.choice_bytes, strict=True)]
        return max(range(len(per_byte)), key=per_byte.__getitem__)


def encode_examples(examples: Sequence[ChoiceExample], tokenizer: Tokenizer,
                    delimiter: str = " ") -> list[EncodedExample]:
    contexts = tokenizer.encode_batch([e.context for e in examples])
    flat = tokenizer.encode_batch([delimiter + c for e in examples for c in e.choices])
    encoded, at = [], 0
    for example, context in zip(examples, contexts, strict=True):
        n = len(example.choices)
        encoded.append(EncodedExample(context, flat[at:at + n],
                                      [len(c.encode("utf-8")) for c in example.choices],
                                      example.answer))
        at += n
    return encoded


def score_example(model: nn.Module, example: EncodedExample, max_len: int,
                  device: Any) -> ExampleScore:
    windows = [continuation_window(example.context, choice, max_len)
               for choice in example.choices]
    sums, _ = score_windows(model, windows, device)
    return ExampleScore(sums.tolist(), example.choice_bytes, example.answer,
                        any(w.truncated for w in windows))


class MultipleChoice:
    """The evaluator: ``acc``, ``acc_norm``, ``examples`` and ``truncated`` (examples whose
    context was cut to fit the model), over all ranks."""

    def __init__(self, examples: Sequence[EncodedExample], world: World) -> None:
        self.examples, self.world = list(examples), world

    def evaluate(self, model: nn.Module, should_stop: Callable[[], bool]
                 ) -> dict[str, float] | None:
        max_len = as_language_model(model).max_seq_len
        model.eval()
        counts = [0, 0, 0, 0]  # examples, correct, correct by bytes, truncated
        for example, real in shard_passes(self.examples, self.world):
            if should_stop():
                return None
            score = score_example(model, example, max_len, self.world.device)
            if real:
                counts[0] += 1
                counts[1] += score.predicted == score.answer
                counts[2] += score.predicted_norm == score.answer
                counts[3] += score.truncated
        n, correct, correct_norm, truncated = (
            int(c) for c in sum_over_ranks(counts, self.world, dtype=torch.int64))
        return {"acc": correct / n, "acc_norm": correct_norm / n, "examples": n,
                "truncated": truncated}
