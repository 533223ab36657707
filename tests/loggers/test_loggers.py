"""Loggers (kind ``logger``) chosen by ``trainer.loggers``: metrics.jsonl always, the
console by default, TensorBoard / W&B / the curve plot when asked, failures contained."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.registry import ResolverRegistry
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import (
    MetricsLog,
    Subscribers,
    build_loggers,
    read_metrics,
)
from llm_gym.runner.progress import Progress
from llm_gym.runner.settings import TrainerSettings

pytestmark = pytest.mark.usefixtures("use_demo_cache")

# mem/*: a CPU run's memory (memory_telemetry.py)
TRAIN_KEYS = {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "data_wait_pct", "tokens",
              "checkpoint_wait_s", "mem/rss_mib", "mem/peak_rss_mib"}
EVAL_KEYS = {"step", "eval_loss", "eval_perplexity"}


@pytest.fixture(scope="module")
def registry() -> ResolverRegistry:
    return ResolverRegistry.from_installed_plugins()


def _build(registry, run_dir: Path, *entries, start_step: int = 0):
    with registry.active():  # trainer.loggers validate against the registry
        settings = TrainerSettings(max_steps=8, seq_len=8, loggers=list(entries))
    provided = {"world": None, "trainer": settings, "run_dir": run_dir,
                "start_step": start_step, "title": "test"}
    return build_loggers(settings.loggers, provided)


def _record(step: int, loss: float) -> dict:
    return {"step": step, "loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0,
            "mfu": None, "data_wait_pct": 0.0, "tokens": 64 * step, "mem/peak_rss_mib": 500.0}


def test_default_console_lines_and_the_exact_metrics_format(tmp_path, capsys):
    run_recipe("gpt2-debug", [], run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "step 1/8 | loss " in out and "step 8/8 | eval_loss " in out
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [set(r) for r in records if "loss" in r] == [TRAIN_KEYS] * 8
    assert [set(r) for r in records if "eval_loss" in r] == [EVAL_KEYS] * 2


def test_no_loggers_still_writes_metrics_jsonl(tmp_path, capsys):
    run_recipe("gpt2-debug", ["trainer.loggers=[]", "trainer.max_steps=3"],
               run_dir=tmp_path / "run")
    assert "step 1/3" not in capsys.readouterr().out
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    # A run shorter than eval_every still evaluates once, at its end.
    assert [r["step"] for r in records if "eval_loss" in r] == [3]


def test_mistakes_are_all_reported_before_anything_runs(tmp_path):
    bad = "trainer.loggers=[Consle,{type_hint: TensorBoard, config: {flush_secs: 0, x: 1}}]"
    with pytest.raises(UserError, match="3 problems in the recipe") as caught:
        run_recipe("gpt2-debug", [bad], run_dir=tmp_path / "run")
    problems = caught.value.problems
    assert "did you mean 'Console'?" in problems[0]
    assert problems[1].startswith("trainer.loggers[1].config.flush_secs:")
    assert problems[2].startswith("trainer.loggers[1].config.x: unexpected key")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_logger_listed_twice_is_refused(tmp_path):
    with pytest.raises(UserError) as caught:
        run_recipe("gpt2-debug", ["trainer.loggers=[Console,console]"],
                   run_dir=tmp_path / "run")
    (problem,) = caught.value.problems
    assert problem.startswith("trainer.loggers: Console is listed twice ([0] "
                              "and [1])")
    assert not (tmp_path / "run").exists()


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def log_train(self, record):
        self.calls += 1
        raise RuntimeError("dashboard down")

    log_eval = log_train

    def close(self):
        raise RuntimeError("cannot close")


def test_an_optional_logger_that_fails_is_switched_off_with_a_warning(tmp_path, capsys):
    jsonl = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    failing = Failing()
    subs = Subscribers([jsonl], [("Failing", failing)])
    subs.log_train(_record(1, 2.0))
    subs.log_eval({"step": 1, "eval_loss": 2.0, "eval_perplexity": 7.4})
    subs.close()
    subs.close()  # twice is fine
    err = capsys.readouterr().err
    assert "logger Failing failed in log_train(): RuntimeError: dashboard down" in err
    assert "switched off" in err and failing.calls == 1
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2  # the run's record is whole


def test_a_failing_metrics_file_fails_the_run(tmp_path):
    subs = Subscribers([Failing()], [])
    with pytest.raises(RuntimeError, match="dashboard down"):
        subs.log_train(_record(1, 2.0))


def test_other_ranks_hold_no_loggers_and_print_nothing(capsys):
    Subscribers([], [], main=False).message("hello")
    assert capsys.readouterr().out == ""


def test_live_panel_keeps_the_eval_loss_and_prints_messages_above(monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stdout as a terminal
    progress = Progress(8, 0, "demo run")
    assert progress.live_mode
    progress.log_train(_record(1, 2.5))
    progress.log_eval({"step": 1, "eval_loss": 2.25, "eval_perplexity": 9.49})
    progress.log_train(_record(2, 2.0))
    progress.message("resumed at step 0")
    progress.close()
    out = capsys.readouterr().out
    assert "resumed at step 0" in out and "demo run" in out
    assert "eval loss" in out and "2.2500" in out and "2.0000" in out


# What an evaluator's call adds to metrics.jsonl (llm_gym.evaluation.evaluator.Schedule).
EVALUATOR_RECORD = {"step": 4, "eval/hellaswag/acc": 0.25, "eval/hellaswag/acc_norm": 0.5,
                    "eval/hellaswag/examples": 24, "eval/hellaswag/truncated": 0,
                    "eval/hellaswag/seconds": 0.4125}


def test_plain_lines_show_the_evaluator_records(capsys):
    progress = Progress(8, 0, "demo run")
    assert not progress.live_mode  # captured stdout is no terminal
    progress.log_eval(EVALUATOR_RECORD)
    progress.close()
    line = capsys.readouterr().out.strip()
    assert line.startswith("step 4/8 | eval/hellaswag/acc 0.2500 | eval/hellaswag/acc_norm "
                           "0.5000 | eval/hellaswag/examples 24 | eval/hellaswag/truncated 0 "
                           "| eval/hellaswag/seconds 0.41s"), line


def test_live_panel_keeps_the_evaluator_records(monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")
    progress = Progress(8, 0, "demo run")
    progress.log_eval(EVALUATOR_RECORD)
    progress.log_train(_record(5, 2.0))
    progress.close()
    out = capsys.readouterr().out
    assert "eval/hellaswag/acc_norm" in out and "0.5000" in out and "0.41s" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install 'llm_gym[tensorboard]')")
def test_tensorboard_scalars_and_resume_purges_the_steps_written_again(registry, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for start, steps, offset in ((0, range(1, 7), 0.0), (4, range(5, 9), 10.0)):
        ((name, logger),) = _build(registry, tmp_path, "TensorBoard", start_step=start)
        for step in steps:
            logger.log_train(_record(step, step + offset))
        logger.log_eval({"step": steps[-1], "eval_loss": 1.5, "eval_perplexity": 4.48})
        logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    # Steps 5 and 6 of the first run were purged: the resumed run wrote them again.
    assert loss == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 15), (6, 16), (7, 17), (8, 18)]
    assert [e.step for e in events.Scalars("eval/loss")] == [8]
    assert "perf/tokens_per_s" in events.Tags()["scalars"]
    assert "mem/peak_rss_mib" in events.Tags()["scalars"]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install 'llm_gym[tensorboard]')")
def test_tensorboard_writes_the_evaluator_records(registry, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ((_, logger),) = _build(registry, tmp_path, "TensorBoard")
    logger.log_eval(EVALUATOR_RECORD)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    written = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
               for tag in events.Tags()["scalars"]}
    assert written == {key: [(4, pytest.approx(value))]
                       for key, value in EVALUATOR_RECORD.items() if key != "step"}


def test_tensorboard_missing_names_the_extra(registry, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match=r"pip install 'llm_gym\[tensorboard\]'"):
        _build(registry, tmp_path, "TensorBoard")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (pip install 'llm_gym[wandb]')")
def test_wandb_offline_run_under_the_run_dir(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "recipe.resolved.yaml").write_text("trainer: {max_steps: 8}\n")
    ((_, logger),) = _build(registry, tmp_path, "WandB")
    logger.log_train(_record(1, 3.0))
    logger.log_eval({"step": 1, "eval_loss": 2.9, "eval_perplexity": 18.2})
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


class FakeWandB:
    """The part of the wandb module the logger uses: init() and the run's log/finish."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        return self

    def log(self, values: dict, step: int) -> None:
        self.logged.append((values, step))

    def finish(self) -> None:
        pass


def test_wandb_keys_have_one_group_prefix(registry, tmp_path, monkeypatch):
    """Train and eval_loss records get train/ and eval/; an evaluator's keys, already
    eval/<name>/<metric>, go as they are (not eval/eval/...)."""
    fake = FakeWandB()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    ((_, logger),) = _build(registry, tmp_path, "WandB")
    assert fake.init_kwargs["mode"] == "offline" and fake.init_kwargs["dir"] == str(tmp_path)
    logger.log_train(_record(4, 3.0))
    logger.log_eval({"step": 4, "eval_loss": 2.9, "eval_perplexity": 18.2})
    logger.log_eval(EVALUATOR_RECORD)
    logger.close()
    (train, step), (loss, _), (evaluator, _) = fake.logged
    assert step == 4 and train["train/loss"] == 3.0 and "train/mfu" not in train  # None
    assert loss == {"eval/loss": 2.9, "eval/perplexity": 18.2}
    assert evaluator == {k: v for k, v in EVALUATOR_RECORD.items() if k != "step"}


def test_wandb_missing_names_the_extra(registry, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UserError, match=r"pip install 'llm_gym\[wandb\]'"):
        _build(registry, tmp_path, "WandB")


def _metrics(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=True)
    for step in range(1, 5):
        log.write(_record(step, 5.0 - step))
    log.close()


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (pip install 'llm_gym[plot]')")
def test_curves_logger_writes_the_png_at_close(registry, tmp_path, capsys):
    _metrics(tmp_path)
    ((_, logger),) = _build(registry, tmp_path, "Curves")
    logger.close()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"curves: {tmp_path / 'curves.png'}" in capsys.readouterr().out


def test_curves_logger_never_fails_the_run(registry, tmp_path, capsys, monkeypatch):
    _metrics(tmp_path)
    ((_, logger),) = _build(registry, tmp_path, "Curves")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    logger.close()
    assert "curves.png not written: matplotlib is not installed" in capsys.readouterr().err
    monkeypatch.undo()
    import llm_gym.plotting

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(llm_gym.plotting, "plot_runs", broken)
    logger.close()
    assert "warning: could not plot the curves: OSError: disk full" in capsys.readouterr().err
    assert not (tmp_path / "curves.png").exists()


def test_loggers_shorthand_and_default(registry):
    with registry.active():
        (default,) = TrainerSettings(max_steps=1, seq_len=1).loggers
        (entry,) = TrainerSettings(max_steps=1, seq_len=1, loggers=["curves"]).loggers
    assert (default.type_hint.name, default.config.model_dump()) == ("Console", {})
    assert entry.type_hint.name == "Curves" and entry.config.file == "curves.png"
    assert entry.model_dump() == {"type_hint": "Curves", "config": {"file": "curves.png"}}


def test_loggers_validate_only_against_a_registry():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="validated against a registry"):
        TrainerSettings(max_steps=1, seq_len=1)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (pip install 'llm_gym[plot]')")
def test_curves_file_of_an_unknown_format_is_refused_when_the_recipe_is_checked(capsys):
    from llm_gym.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["recipe", "validate", "gpt2-debug",
              "trainer.loggers=[{type_hint: Curves, config: {file: curves.bmp}}]"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "trainer.loggers[0].config.file" in err and ".bmp is not an image format" in err
    assert ".png" in err and ".svg" in err
