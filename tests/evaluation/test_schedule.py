"""Which evaluators run when, how their records look, and what a failing one does."""

from __future__ import annotations

import pytest

from llm_gym.evaluation.evaluator import Schedule, Scheduled


class Fixed:
    def __init__(self, metrics=None, error: Exception | None = None) -> None:
        self.metrics, self.error, self.calls = metrics or {"acc": 0.5}, error, 0

    def evaluate(self, model, should_stop):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return None if should_stop() else self.metrics


def never() -> bool:
    return False


def test_each_runs_at_its_own_every_and_at_the_last_step() -> None:
    schedule = Schedule([Scheduled("a", 2, Fixed()), Scheduled("b", 3, Fixed())], max_steps=7)
    assert {s: [e.name for e in schedule.due(s)] for s in range(1, 8)} == {
        1: [], 2: ["a"], 3: ["b"], 4: ["a"], 5: [], 6: ["a", "b"], 7: ["a", "b"]}
    # The data ran out after step 4: b has not run at 4, a just did.
    assert [e.name for e in schedule.due(4, ended_early=True)] == ["b"]


def test_records_are_keyed_by_name_with_seconds_and_legacy_keeps_old_keys() -> None:
    schedule = Schedule([Scheduled("validation", 1, Fixed({"loss": 2.0, "perplexity": 7.4}),
                                   legacy_keys=True),
                         Scheduled("hs", 1, Fixed({"acc": 0.25, "acc_norm": 0.5}))], 4)
    legacy, new = schedule.run(1, None, never, print)
    assert legacy == {"step": 1, "eval_loss": 2.0, "eval_perplexity": 7.4}
    assert set(new) == {"step", "eval/hs/acc", "eval/hs/acc_norm", "eval/hs/seconds"}
    assert new["eval/hs/acc"] == 0.25 and new["eval/hs/seconds"] >= 0


def test_a_failing_evaluator_warns_and_is_switched_off_unless_it_should_stop() -> None:
    broken, fine = Fixed(error=RuntimeError("boom")), Fixed()
    schedule = Schedule([Scheduled("broken", 1, broken), Scheduled("fine", 1, fine)], 4)
    warnings: list[str] = []
    assert schedule.run(1, None, never, warnings.append) == [
        {"step": 1, "eval/fine/acc": 0.5, "eval/fine/seconds": pytest.approx(0, abs=1)}]
    assert "evaluator broken failed at step 1 (RuntimeError: boom)" in warnings[0]
    schedule.run(2, None, never, warnings.append)
    assert broken.calls == 1 and fine.calls == 2 and len(warnings) == 1
    strict = Schedule([Scheduled("broken", 1, Fixed(error=RuntimeError("x")), on_error="stop")], 4)
    with pytest.raises(RuntimeError):
        strict.run(1, None, never, warnings.append)


def test_a_stop_request_mid_evaluation_returns_none() -> None:
    schedule = Schedule([Scheduled("a", 1, Fixed())], 4)
    assert schedule.run(1, None, lambda: True, print) is None
