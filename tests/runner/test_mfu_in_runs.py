"""A run never logs an MFU above 100%: a peak that a step beats is raised and recorded."""

from __future__ import annotations

import pytest

from llm_gym.runner import flops
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics


@pytest.mark.usefixtures("use_demo_cache")
def test_a_peak_that_a_step_beats_is_raised_and_the_record_says_so(tmp_path, monkeypatch,
                                                                    capsys):
    # As if the start-up probe had run on a machine far busier than the run found it.
    monkeypatch.setattr(flops, "peak_flops", lambda device: (1.0, "a probe on a busy machine"))
    monkeypatch.setattr(flops, "measured_cpu_peak", lambda *a, **k: 1.0)
    run_recipe("gpt2-debug", ["trainer.max_steps=4", "trainer.log_every=1",
                              "trainer.eval_every=null"], run_dir=tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(records) == 4
    assert all(r["mfu"] is not None and 0 < r["mfu"] <= 1.0 for r in records)
    raised = [r for r in records if "peak_raised" in r]
    assert raised and "raised to" in raised[0]["peak_raised"]
    assert "the peak was wrong" in capsys.readouterr().out
