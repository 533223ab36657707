"""The one check of sampling arguments, for every caller: ``llm_gym generate``, the
trainer's samples, and Python code calling a model's ``generate`` directly.

Without it, ``temperature=nan`` fails deep inside ``torch.multinomial``, ``inf`` samples
uniformly without a word, a tiny positive temperature overflows the logits to inf (then
NaN probabilities), and ``max_new_tokens=-1`` silently generates nothing. Importing this
module imports nothing heavy, so the CLI can name the bounds in its help.
"""

from __future__ import annotations

import math
from typing import Any

from llm_gym.errors import UserError

# Below this (but above 0, which is greedy) logits / temperature overflow float32 to inf,
# and sampling from inf - inf = NaN probabilities fails inside torch.
MIN_TEMPERATURE = 1e-4


class SamplingArgumentError(UserError, ValueError):
    """A sampling argument no model can use: a ``ValueError`` for Python callers, a
    ``UserError`` (exit code 2, no traceback) on the command line."""


def check_sampling_args(*, max_new_tokens: Any, temperature: Any, top_k: Any,
                        top_p: Any = None) -> None:
    """Refuse what ``generate(input_ids, max_new_tokens, temperature, top_k, top_p)``
    cannot use, naming the argument: a count that is not an integer >= 0, a temperature
    that is not 0 (greedy) or a finite number >= MIN_TEMPERATURE, a top_k that is not >= 1,
    a top_p that is not a number in (0, 1]."""
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise SamplingArgumentError(
            f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or not (temperature == 0 or temperature >= MIN_TEMPERATURE)):
        raise SamplingArgumentError(
            f"temperature must be 0 (greedy decoding) or a finite number >= "
            f"{MIN_TEMPERATURE:g}, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise SamplingArgumentError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float)
                              or not math.isfinite(top_p) or not 0 < top_p <= 1):
        raise SamplingArgumentError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def _is_int(value: Any) -> bool:
    # A bool is an int to Python, but True new tokens is a mistake, not a count.
    return isinstance(value, int) and not isinstance(value, bool)
