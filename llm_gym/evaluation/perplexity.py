"""Held-out perplexity on texts tokenised on the fly: loss and perplexity per token, and
bits per byte, which does not depend on the tokenizer (a run with a larger vocabulary
has fewer tokens to predict, each harder; per byte of text the two compare).

Every token of a document is scored once, the first given the end-of-document id, each
later one given as much of the document before it as fits the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from llm_gym.data.tokenizer import Tokenizer
from llm_gym.evaluation.scoring import Window, rolling_windows, score_windows
from llm_gym.evaluation.sharding import shard_passes, sum_over_ranks
from llm_gym.model_contract import as_language_model
from llm_gym.runner.distributed import World


class TextPerplexity:
    """The evaluator: ``loss`` (nats per token), ``perplexity``, ``bits_per_byte``,
    ``tokens`` and ``bytes``, over all ranks."""

    def __init__(self, texts: Sequence[str], tokenizer: Tokenizer, world: World,
                 batch_size: int) -> None:
        self.documents = tokenizer.encode_batch(list(texts))
        self.prefix = tokenizer.eod_id
        self.bytes = sum(len(t.encode("utf-8")) for t in texts)
        self.world, self.batch_size = world, batch_size

    def _batches(self, max_len: int) -> list[list[Window]]:
        windows = [w for doc in self.documents for w in rolling_windows(doc, self.prefix, max_len)]
        return [windows[i:i + self.batch_size] for i in range(0, len(windows), self.batch_size)]

    def evaluate(self, model: nn.Module, should_stop: Callable[[], bool]
                 ) -> dict[str, float] | None:
        max_len = as_language_model(model).max_seq_len
        model.eval()
        nll, tokens = 0.0, 0
        for batch, real in shard_passes(self._batches(max_len), self.world):
            if should_stop():
                return None
            sums, _ = score_windows(model, batch, self.world.device)
            if real:
                nll -= float(sums.sum())
                tokens += sum(w.scored for w in batch)
        nll, = sum_over_ranks([nll], self.world, dtype=torch.float64)
        tokens, = sum_over_ranks([tokens], self.world, dtype=torch.int64)
        loss = nll / tokens
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 50 else math.inf,
                "bits_per_byte": nll / math.log(2) / self.bytes, "tokens": int(tokens),
                "bytes": self.bytes}
