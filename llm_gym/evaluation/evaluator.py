"""What an evaluator is to the trainer, and the schedule that runs the recipe's.

An evaluator (a component of kind ``evaluator``, listed in ``trainer.evaluators``) builds
an object with ``evaluate(model, should_stop) -> {metric: value}``, run on every rank
(each scores its share and the results are reduced, so every rank returns the same
numbers); it returns None when ``should_stop()`` (a collective: every rank calls it
equally often) says a stop was requested. Its config has a ``name`` (the records' key:
``eval/<name>/<metric>``), ``every`` (steps between calls; the run's last step counts
too) and ``on_error`` (``warn``: a failure is reported and that evaluator switched off,
so it never stops a run; ``stop``: it ends the run). Every rank reads the same files and
runs the same passes, so a failure (a bug, a device out of memory) happens on every rank
alike; one that struck a single rank mid-evaluation would leave the others waiting in
their next collective until the process group's timeout ends the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import nn

OnError = Literal["warn", "stop"]


class Evaluator(Protocol):
    def evaluate(self, model: nn.Module, should_stop: Callable[[], bool]
                 ) -> dict[str, float] | None: ...


@dataclass
class Scheduled:
    name: str
    every: int
    evaluator: Evaluator
    on_error: OnError = "warn"
    # The records of trainer.eval_every's validation loss keep their old keys
    # (eval_loss, eval_perplexity) and carry no time, so those runs log exactly as before.
    legacy_keys: bool = False


# What the runner hands an evaluator's build(), by parameter name (a recipe check
# refuses an evaluator asking for anything else).
EVALUATOR_PROVIDES = ("world", "trainer", "loss", "tokenizer", "eval_dataset", "run_dir")


def metric_key(name: str, metric: str) -> str:
    return f"eval/{name}/{metric}"


class Schedule:
    """The evaluators of a run; ``run(step, ...)`` calls those due and returns the
    record(s) to log: one per legacy evaluator, one for all the others."""

    def __init__(self, evaluators: Sequence[Scheduled], max_steps: int) -> None:
        self.evaluators, self.max_steps = list(evaluators), max_steps

    def due(self, step: int, *, ended_early: bool = False) -> list[Scheduled]:
        """Those whose ``every`` divides ``step``, and all at ``max_steps`` (a run shorter
        than ``every``, or not a multiple of it, is evaluated at its end). A run that ended
        early (its data ran out) after ``step``: those that did not just run at it."""
        if ended_early:
            return [e for e in self.evaluators if step % e.every]
        return [e for e in self.evaluators if step % e.every == 0 or step == self.max_steps]

    def run(self, step: int, model: nn.Module, should_stop: Callable[[], bool],
            warn: Callable[[str], None], *, ended_early: bool = False
            ) -> list[dict[str, Any]] | None:
        """The records of the evaluators due at ``step``; None if a stop was requested."""
        records: list[dict[str, Any]] = []
        combined: dict[str, Any] = {}
        for scheduled in self.due(step, ended_early=ended_early):
            started = time.perf_counter()
            try:
                metrics = scheduled.evaluator.evaluate(model, should_stop)
            except Exception as exc:
                if scheduled.on_error == "stop":
                    raise
                # A failing evaluator is reported and left out; training goes on.
                self.evaluators.remove(scheduled)
                warn(f"warning: evaluator {scheduled.name} failed at step {step} "
                     f"({type(exc).__name__}: {exc}); it is switched off for the rest of "
                     "the run (on_error: stop would end the run instead)")
                continue
            if metrics is None:
                return None
            if scheduled.legacy_keys:
                records.append({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
                continue
            combined.update({metric_key(scheduled.name, k): v for k, v in metrics.items()})
            combined[metric_key(scheduled.name, "seconds")] = time.perf_counter() - started
        if combined:
            records.append({"step": step, **combined})
        return records
