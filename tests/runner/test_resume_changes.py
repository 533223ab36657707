"""A resume never silently changes the run: the recipe is compared with the one that wrote
the checkpoint; refused changes are named, allowed ones are trained with, and every
segment keeps its own resolved recipe."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from llm_gym.errors import UserError
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.resume_check import ALLOWED, NEVER, SAFE, check_resume, rule_for

pytestmark = pytest.mark.usefixtures("use_demo_cache")

QUIET = ("trainer.eval_every=null",)


def _run(run_dir: Path, *overrides: str, allow: tuple[str, ...] = ()) -> dict:
    return run_recipe("gpt2-debug", [*QUIET, *overrides], run_dir=run_dir,
                      allow_changes=allow)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _lrs(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["lr"] for r in read_metrics(run_dir / "metrics.jsonl") if "lr" in r}


@pytest.fixture
def four_steps(tmp_path: Path) -> Path:
    """A finished 4-step run (checkpoint at step 4) to resume from."""
    _run(tmp_path / "run", "trainer.max_steps=4")
    return tmp_path / "run"


def test_refused_changes_are_all_named_with_old_and_new_and_nothing_is_written(four_steps):
    before = _files(four_steps)
    with pytest.raises(UserError) as caught:
        _run(four_steps, "trainer.max_steps=8", "model.config.n_layer=1",
             "optimizer.config.lr=0.5", "trainer.seed=3", "train_dataset.config.corpus_mb=0.4")
    problems = caught.value.problems
    assert "step_00000004" in caught.value.message
    assert any(p.startswith("model.config.n_layer: 2 -> 1 ") and "even with --allow-change"
               in p for p in problems)
    assert any(p.startswith("optimizer.config.lr: 0.001 -> 0.5 ")
               and "--allow-change optimizer.config.lr" in p for p in problems)
    assert any(p.startswith("trainer.seed: 0 -> 3 ") for p in problems)
    assert any(p.startswith("train_dataset.config.corpus_mb: 0.5 -> 0.4 ") for p in problems)
    assert len(problems) == 4  # max_steps is a safe change: not among them
    assert _files(four_steps) == before  # byte for byte, no .lock left either


def test_a_key_that_can_never_change_is_refused_even_when_allowed(four_steps):
    with pytest.raises(UserError, match="model.config.n_layer: 2 -> 3") as caught:
        _run(four_steps, "trainer.max_steps=6", "model.config.n_layer=3",
             allow=("model.config.n_layer",))
    assert "cannot be changed on resume, even with --allow-change" in str(caught.value)


def test_an_allowed_lr_is_trained_with_and_each_segment_keeps_its_recipe(four_steps):
    first = (four_steps / "recipe.resolved.yaml").read_bytes()
    _run(four_steps, "trainer.max_steps=6", "optimizer.config.lr=0.002",
         allow=("optimizer.config.lr",))
    # gpt2-debug's Constant schedule is past its 2-step warmup: the new lr, exactly.
    assert _lrs(four_steps)[5] == 0.002 and _lrs(four_steps)[4] == 0.001
    assert (four_steps / "recipe.resolved.yaml").read_bytes() == first
    segment = four_steps / "recipe.resolved.step_00000004.yaml"
    assert yaml.safe_load(segment.read_text())["optimizer"]["config"]["lr"] == 0.002
    assert "optimizer.config.lr: 0.001 -> 0.002" in segment.read_text()
    # Step 6 was written under the new segment's recipe: the same lr continues without
    # --allow-change (that segment records only its longer max_steps); the old lr is a
    # change again.
    _run(four_steps, "trainer.max_steps=7", "optimizer.config.lr=0.002")
    assert _lrs(four_steps)[7] == 0.002
    assert sorted(p.name for p in four_steps.glob("recipe.resolved*")) == [
        "recipe.resolved.step_00000004.yaml", "recipe.resolved.step_00000006.yaml",
        "recipe.resolved.yaml"]
    assert "#   trainer.max_steps: 6 -> 7\n# pins" in (
        four_steps / "recipe.resolved.step_00000006.yaml").read_text()
    with pytest.raises(UserError, match=r"optimizer.config.lr: 0.002 -> 0.001"):
        _run(four_steps, "trainer.max_steps=8")


COSINE = ("scheduler.type_hint=WarmupCosine", "scheduler.config.warmup_steps=2",
          "scheduler.config.decay_steps=${trainer.max_steps}")


def test_raising_max_steps_says_the_schedule_changed_with_the_lr_before_and_after(
        tmp_path, capfd):
    run_dir = tmp_path / "run"
    run_recipe("gpt2-debug", [*QUIET, *COSINE, "trainer.max_steps=6"], run_dir=run_dir,
               allow_drift=True)
    capfd.readouterr()
    run_recipe("gpt2-debug", [*QUIET, *COSINE, "trainer.max_steps=12"], run_dir=run_dir,
               allow_drift=True)
    out = capfd.readouterr().out
    assert "warning: the learning rate changes on resume" in out
    assert "trainer.max_steps: 6 -> 12" in out and "scheduler.config.decay_steps: 6 -> 12" in out
    # Step 7 trains on the new schedule (cosine over 12 steps), and says so.
    progress = (6 - 2) / (12 - 2)
    expected = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert _lrs(run_dir)[7] == pytest.approx(expected, rel=1e-12)
    # Before: the 6-step schedule had reached its floor, 0.1 of the peak.
    assert f"step 7 trains at lr {expected:.3e} where the checkpoint's schedule gave " \
           f"{1e-4:.3e}" in out
    assert "pin scheduler.config.decay_steps=6" in out


def test_extending_with_a_pinned_schedule_changes_nothing_and_warns_nothing(tmp_path, capfd):
    pinned = [*QUIET, *COSINE[:2], "scheduler.config.decay_steps=12"]
    run_recipe("gpt2-debug", [*pinned, "trainer.max_steps=12"], run_dir=tmp_path / "whole",
               allow_drift=True)
    run_recipe("gpt2-debug", [*pinned, "trainer.max_steps=6"], run_dir=tmp_path / "split",
               allow_drift=True)
    capfd.readouterr()
    run_recipe("gpt2-debug", [*pinned, "trainer.max_steps=12"], run_dir=tmp_path / "split",
               allow_drift=True)
    assert "learning rate changes" not in capfd.readouterr().out
    assert _lrs(tmp_path / "split") == _lrs(tmp_path / "whole")


def test_a_finished_run_has_nothing_left_and_max_steps_below_its_step_is_refused(
        four_steps, capfd):
    before = _files(four_steps)
    result = _run(four_steps, "trainer.max_steps=4")
    assert result["step"] == 4 and math.isfinite(result["loss"])
    assert "nothing left to train" in capfd.readouterr().out
    assert _files(four_steps) == before  # no new checkpoint, no metrics line
    with pytest.raises(UserError, match=r"trainer.max_steps=2 is below the checkpoint's step 4"):
        _run(four_steps, "trainer.max_steps=2")
    assert _files(four_steps) == before


def test_the_rule_table_decides_every_key_and_refuses_unknown_ones(tmp_path):
    assert rule_for("trainer.log_every").verdict == SAFE
    assert rule_for("scheduler.config.decay_steps").verdict == SAFE
    assert rule_for("scheduler.type_hint").verdict == NEVER
    assert rule_for("optimizer.config.lr").verdict == ALLOWED
    assert rule_for("optimizer.config.foreach_chunks").verdict == NEVER  # not a known knob
    assert rule_for("optimizer.type_hint").verdict == NEVER
    assert rule_for("model.config.bias").verdict == NEVER
    assert rule_for("a_plugin_slot.config.size").verdict == NEVER
    old = {"trainer": {"max_steps": 8, "log_every": 1}, "widget": {"size": 1}}
    new = {"trainer": {"max_steps": 9, "log_every": 2}, "widget": {"size": 2}}
    where = dict(step=4, checkpoint=tmp_path / "c", checkpoint_recipe=tmp_path / "r")
    with pytest.raises(UserError) as caught:
        check_resume(old, new, **where)
    assert caught.value.problems == [
        "widget.size: 1 -> 2 (not known to be safe to change on resume: cannot be changed "
        "on resume, even with --allow-change)"]
    del new["widget"]
    with pytest.raises(UserError, match=r"widget.size: 1 -> \(unset\)"):
        check_resume(old, new, **where)
    new["widget"] = {"size": 1}
    plan = check_resume(old, new, **where)
    assert [str(c) for c in plan.applied] == ["trainer.log_every: 1 -> 2",
                                              "trainer.max_steps: 8 -> 9"]


def _source(path: str) -> dict:
    return {"type_hint": "PackedTokens", "config": {"path": path, "split": "train"}}


def test_a_change_inside_a_list_is_named_at_its_leaf_and_judged_as_its_list(tmp_path):
    old = {"trainer": {"max_steps": 8, "loggers": [{"type_hint": "Console", "config": {}}]},
           "optimizer": {"type_hint": "AdamW", "config": {"betas": [0.9, 0.95]}},
           "train_dataset": {"type_hint": "Mixture", "config": {
               "weights": [3, 1], "sources": [_source("data/a"), _source("data/tiny")]}}}
    new = copy.deepcopy(old)
    new["train_dataset"]["config"]["sources"][1]["config"]["path"] = "data/a"
    new["optimizer"]["config"]["betas"][1] = 0.99
    new["trainer"]["loggers"].append({"type_hint": "Curves", "config": {}})
    where = dict(step=4, checkpoint=tmp_path / "c", checkpoint_recipe=tmp_path / "r")
    with pytest.raises(UserError) as caught:
        check_resume(old, new, **where)
    assert caught.value.problems == [
        "optimizer.config.betas[1]: 0.95 -> 0.99 (the checkpoint's optimizer state carries "
        "the old value; not applied unless asked: pass --allow-change "
        "optimizer.config.betas[1] to train with the new value from step 5)",
        "train_dataset.config.sources[1].config.path: data/tiny -> data/a (the checkpoint's "
        "data position belongs to the old data: cannot be changed on resume, even with "
        "--allow-change)"]
    del new["train_dataset"]
    new["train_dataset"] = old["train_dataset"]
    plan = check_resume(old, new, allow_changes=("optimizer.config.betas",), **where)
    assert [str(c) for c in plan.applied] == [
        "optimizer.config.betas[1]: 0.95 -> 0.99",
        'trainer.loggers[1]: (unset) -> {"type_hint": "Curves", "config": {}}']
    assert plan.changed("optimizer.config.betas") and plan.changed("trainer.loggers")


def test_the_command_line_refuses_a_change_and_allow_change_applies_it(four_steps):
    from tests.conftest import run_cli

    resume = ["recipe", "run", "gpt2-debug", *QUIET, "trainer.max_steps=5",
              "optimizer.config.lr=0.002", "--run-dir", str(four_steps), "--resume"]
    refused = run_cli(*resume)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "optimizer.config.lr: 0.001 -> 0.002" in refused.stderr
    allowed = run_cli(*resume, "--allow-change", "optimizer.config")
    assert allowed.returncode == 0, allowed.stderr
    assert "resuming from step 4" in allowed.stdout and _lrs(four_steps)[5] == 0.002


def test_evaluators_change_safely_and_an_unknown_allow_change_is_refused(tmp_path):
    # Evaluators keep nothing in a checkpoint and consume no training randomness: like
    # the loggers, a changed or added one is applied and recorded.
    assert rule_for("trainer.evaluators").verdict == SAFE
    text = {"type_hint": "TextPerplexity", "config": {"name": "text", "every": 2}}
    old = {"trainer": {"max_steps": 4, "evaluators": [text]},
           "optimizer": {"type_hint": "AdamW", "config": {"lr": 0.001}}}
    new = copy.deepcopy(old)
    new["trainer"]["evaluators"][0]["config"]["every"] = 3
    new["trainer"]["evaluators"].append({"type_hint": "ValidationLoss", "config": {}})
    where = dict(step=4, checkpoint=tmp_path / "c", checkpoint_recipe=tmp_path / "r")
    plan = check_resume(old, new, **where)
    assert [c.key for c in plan.applied] == ["trainer.evaluators[0].config.every",
                                             "trainer.evaluators[1]"]
    # A name that is no key of either recipe is a typo, not silently ignored; a key that
    # exists but did not change (or a prefix of keys) is harmless and accepted.
    with pytest.raises(UserError) as caught:
        check_resume(old, new, allow_changes=("optimizer.config.lrr",), **where)
    assert caught.value.problems == [
        "--allow-change optimizer.config.lrr: no key of the recipe is named so; did you "
        "mean 'optimizer.config.lr'?"]
    check_resume(old, new, allow_changes=("optimizer.config.lr", "optimizer.config",
                                          "trainer.evaluators[0]"), **where)
