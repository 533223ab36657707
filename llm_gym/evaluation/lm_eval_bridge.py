"""An llm_gym model as an lm-evaluation-harness ``LM``, so any harness task scores a run's
checkpoint without converting it.

This module imports ``lm_eval`` at the top: import it only after
``lm_eval_run.require_lm_eval()`` has checked the extra is installed.

The numbers are meant to be those of lm-eval's own ``hf`` backend on the run's Hugging Face
export (a test checks them within 1e-4 per request), so it does what that backend does:

- a request's context and continuation are split as ``TemplateLM._encode_pair`` splits
  them (the whole encoded, then the context; the continuation's tokens are the rest), so
  a word that merges across the boundary is scored like the harness scores it;
- an input longer than the model is cut from the left to its last ``max_seq_len + 1``
  tokens (``scoring.continuation_window``, the rule of ``HFLM._loglikelihood_tokens``);
  such requests are counted (``truncated``);
- rolling log-likelihoods use the harness's own window functions, with the end-of-document
  id in front, so perplexity tasks agree token for token;
- generation is greedy through the model's ``generate`` (the model contract), unless a
  task asks for sampling, and stops at the task's ``until`` strings or end of document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from torch import nn

from llm_gym.data.tokenizer import Tokenizer
from llm_gym.evaluation.scoring import continuation_window, score_windows
from llm_gym.model_contract import as_language_model

# lm-eval's hf backend default for a task that names no max_gen_toks.
DEFAULT_MAX_GEN_TOKS = 256
# Tokens generated between checks for a stop string: a request that stops early is not
# generated to max_gen_toks (the model's generate has no stop strings of its own).
GENERATE_CHUNK = 16
# The seed of sampled generations (a task with do_sample: true), so reruns agree.
SAMPLING_SEED = 1234

Request = tuple[Any, list[int], list[int]]  # (request key for the cache, context, continuation)


class LLMGymLM(TemplateLM):
    """A model that satisfies ``llm_gym.model_contract.LanguageModel`` and the run's
    tokenizer, scored in batches of ``batch_size`` sequences on ``device``."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, device: torch.device,
                 batch_size: int = 8) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer_ = tokenizer
        self.max_length = as_language_model(model).max_seq_len
        self.device_ = torch.device(device)
        self.batch_size = batch_size
        # What the run did, for the results: requests scored and those cut to fit.
        self.counts = {"requests": 0, "truncated": 0}

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer_.eod_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        # The run's tokenizers add no special tokens (the packer adds the end of document),
        # like the exported GPT-2 tokenizers under the hf backend.
        return self.tokenizer_.encode(string)

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer_.decode(list(ids))

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        windows = [continuation_window(context, continuation, self.max_length)
                   for _, context, continuation in requests]
        self.counts["requests"] += len(windows)
        self.counts["truncated"] += sum(w.truncated for w in windows)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(windows)
        # Longest first, as the hf backend orders them: batches of alike lengths pad less.
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].inputs))
        for at in range(0, len(order), self.batch_size):
            batch = order[at:at + self.batch_size]
            sums, greedy = score_windows(self.model, [windows[i] for i in batch], self.device_)
            for i, total, is_greedy in zip(batch, sums.tolist(), greedy.tolist(), strict=True):
                results[i] = (float(total), bool(is_greedy))
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        windows: list[Request] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            (text,) = request.args
            pairs = lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(lm_utils.make_disjoint_window, pairs):
                windows.append((None, context, continuation))
                owners.append(index)
        scores = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores, strict=True):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode([self.eot_token_id])
        generator = torch.Generator(device=self.device_).manual_seed(SAMPLING_SEED)
        texts = []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), DEFAULT_MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            text = self._generate(context, until, int(kwargs["max_gen_toks"]), temperature,
                                  kwargs.get("top_k"), generator)
            texts.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return texts

    @torch.no_grad()
    def _generate(self, context: str, until: list[str], max_new: int, temperature: float,
                  top_k: int | None, generator: torch.Generator) -> str:
        """The continuation of ``context``, cut before the first stop string or end of
        document. The context keeps its last ``max_seq_len`` tokens (the model's generate
        slides its window as it goes, so a small model still writes ``max_new`` tokens)."""
        ids = self.tok_encode(context)[-self.max_length:] or [self.eot_token_id]
        prompt = len(ids)
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device_)
        contract = as_language_model(self.model)
        while tokens.shape[1] - prompt < max_new:
            step = min(GENERATE_CHUNK, max_new - (tokens.shape[1] - prompt))
            tokens = contract.generate(tokens, step, temperature=temperature, top_k=top_k,
                                       generator=generator)
            new = tokens[0, prompt:].tolist()
            if self.eot_token_id in new:
                new = new[:new.index(self.eot_token_id)]
                break
            if any(stop and stop in self.tok_decode(new) for stop in until):
                break
        else:
            new = tokens[0, prompt:].tolist()
        return postprocess_generated_text(self.tok_decode(new), until, None)

