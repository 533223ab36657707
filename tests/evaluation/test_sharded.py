"""Examples sharded over 2 processes give exactly the counts of 1 process."""

from __future__ import annotations

import pytest

from llm_gym.runner.launcher import launch_local
from tests.evaluation.sharded_helpers import score_files
from tests.evaluation.task_data import write_hellaswag, write_texts


@pytest.mark.dist
def test_two_processes_count_like_one(tmp_path) -> None:
    # Odd counts: one rank scores a stand-in it does not count, so FSDP's passes match.
    hellaswag = str(write_hellaswag(tmp_path / "hs.jsonl", 13, long_contexts=3))
    texts = str(write_texts(tmp_path / "texts.jsonl", 7))
    one = score_files(hellaswag, texts)
    two = launch_local(2, score_files, (hellaswag, texts))
    assert two[0] == two[1]  # every rank returns the reduced result
    mc1, mc2 = one["mc"], two[0]["mc"]
    assert (mc2["examples"], mc2["truncated"]) == (mc1["examples"], mc1["truncated"]) == (13, 3)
    assert round(mc2["acc"] * 13) == round(mc1["acc"] * 13)
    assert round(mc2["acc_norm"] * 13) == round(mc1["acc_norm"] * 13)
    assert mc2 == mc1
    t1, t2 = one["text"], two[0]["text"]
    assert (t2["tokens"], t2["bytes"]) == (t1["tokens"], t1["bytes"])
    assert t2["loss"] == pytest.approx(t1["loss"], rel=1e-6)


@pytest.mark.dist
def test_eval_over_two_processes_counts_like_one(run, tmp_path) -> None:
    from llm_gym.evaluation.offline import evaluate_checkpoint

    one = evaluate_checkpoint(run["run_dir"], "hellaswag", run["hellaswag"], name="one")
    two = evaluate_checkpoint(run["run_dir"], "hellaswag", run["hellaswag"], name="two",
                              nproc=2)
    for metric in ("examples", "truncated", "acc", "acc_norm"):
        assert two.metrics[metric] == one.metrics[metric]
    assert two.metrics["processes"] == 2
