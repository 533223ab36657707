"""The divergence guard: skipped updates leave no trace, and the device path reads nothing
back per step (no host-device sync), which a dispatch-mode counter proves on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.runner.checkpoint import latest_checkpoint
from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from llm_gym.runner.nonfinite import NonfiniteGuard, skips_on_device
from tests.host_reads import HostReads, reads_in_run


def _model_and_optimizer(implementation: str):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    kernel = {"fused": {"fused": True}, "foreach": {"foreach": True}}[implementation]
    return model, torch.optim.AdamW(model.parameters(), lr=0.1, **kernel)


def _snapshot(model, optimizer) -> list[torch.Tensor]:
    state = [t for s in optimizer.state.values() for t in s.values()]
    return [t.detach().clone() for t in [*model.parameters(), *state]]


def _backward(model) -> None:
    model(torch.ones(2, 4)).sum().backward()


def test_only_fused_optimizers_skip_on_the_device():
    assert skips_on_device(_model_and_optimizer("fused")[1])
    assert not skips_on_device(_model_and_optimizer("foreach")[1])
    sgd = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, foreach=True)
    assert not skips_on_device(sgd)


@pytest.mark.parametrize("implementation", ["fused", "foreach"])
def test_a_nonfinite_step_changes_nothing_and_a_finite_one_updates(implementation):
    model, optimizer = _model_and_optimizer(implementation)
    guard = NonfiniteGuard(optimizer, "skip", main=False)
    _backward(model)
    guard.step(torch.tensor(1.0), 1)  # a first real step, so Adam's state exists
    before = _snapshot(model, optimizer)
    _backward(model)
    guard.step(torch.tensor(float("nan")), 2)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(model, optimizer),
                                                  strict=True))
    assert all(p.grad is None for p in model.parameters())  # cleared either way
    _backward(model)
    guard.step(torch.tensor(2.0), 3)
    assert not torch.equal(before[0], model.weight)
    step_counts = {float(s["step"]) for s in optimizer.state.values()}
    assert step_counts == {2.0}  # the skipped step did not count for bias correction


def test_the_device_path_reads_nothing_back_until_the_check(capfd):
    model, optimizer = _model_and_optimizer("fused")
    guard = NonfiniteGuard(optimizer, "skip", main=True)
    with HostReads() as reads:
        for step, norm in enumerate([1.0, float("inf"), 1.0, float("nan")], start=1):
            _backward(model)
            guard.step(torch.tensor(norm), step)
    assert reads.count == 0
    assert capfd.readouterr().err == ""  # nothing known yet
    with HostReads() as reads:
        guard.check(4)
    assert reads.count == 1  # every pending norm in one read
    err = capfd.readouterr().err
    assert "step 2: gradient norm inf; step skipped" in err
    assert "step 4: gradient norm nan; step skipped" in err
    assert math.isnan(guard.last_norm)  # the newest norm, for the metrics


def test_the_host_path_reads_every_step():
    model, optimizer = _model_and_optimizer("foreach")
    guard = NonfiniteGuard(optimizer, "skip", main=False)
    with HostReads() as reads:
        for step in range(1, 4):
            _backward(model)
            guard.step(torch.tensor(1.0), step)
    # foreach AdamW reads its (CPU) step counters too, so count at least one per step
    assert reads.count >= 3


def test_stop_on_the_device_path_names_the_first_bad_step_and_where_it_stopped():
    model, optimizer = _model_and_optimizer("fused")
    guard = NonfiniteGuard(optimizer, "stop", main=False,
                           describe_checkpoint=lambda: "The newest checkpoint, X, is intact. ")
    for step, norm in enumerate([1.0, float("nan"), float("inf")], start=1):
        _backward(model)
        guard.step(torch.tensor(norm), step)
    with pytest.raises(UserError) as caught:
        guard.check(3)
    message = str(caught.value)
    assert message.startswith("step 2: the loss or gradient norm is nan (not finite)")
    assert "the run stopped at step 3" in message and "X, is intact" in message


# -- through the runner -------------------------------------------------------------------


@pytest.mark.usefixtures("use_demo_cache")
def test_a_run_with_a_fused_optimizer_stops_at_the_next_check_without_saving_past_it(
    tmp_path, faults
):
    run_dir = tmp_path / "run"
    args = ["loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[6]",
            "optimizer.config.implementation=fused", "trainer.log_every=4",
            "trainer.checkpoint_every=4", "trainer.eval_every=null"]
    with pytest.raises(UserError, match=r"^step 6: the loss or gradient norm is nan") as caught:
        run_recipe("gpt2-debug", args, run_dir=run_dir)
    assert "stopped at step 8" in str(caught.value)
    assert "step_00000004" in str(caught.value)
    # step 8's checkpoint would come after the bad step 6: it must not exist
    assert latest_checkpoint(run_dir).name == "step_00000004"
    assert not (run_dir / "checkpoints" / "step_00000008").exists()


@pytest.mark.usefixtures("use_demo_cache")
def test_a_run_reads_the_device_once_per_logging_interval_not_once_per_step(tmp_path):
    """The same run for 4 and for 8 steps, logging only at the end: with the fused
    optimizer the number of host reads does not grow with the steps. (Its GPU twin is in
    tests/gpu.)"""

    def host_reads(steps: int, implementation: str) -> int:
        return reads_in_run(tmp_path / f"{implementation}-{steps}", steps,
                            [f"optimizer.config.implementation={implementation}"])

    fused = host_reads(8, "fused") - host_reads(4, "fused")
    foreach = host_reads(8, "foreach") - host_reads(4, "foreach")
    assert fused == 0
    assert foreach >= 4  # the host path reads at least once a step: the counter sees it


@pytest.mark.usefixtures("use_demo_cache")
def test_skipped_steps_still_advance_the_learning_rate_schedule(tmp_path, faults, capfd,
                                                               monkeypatch):
    import llm_gym.runner.trainer as trainer_module

    paths = []  # which way each run's guard skips: it must be the one the run is named for

    class RecordingGuard(NonfiniteGuard):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            paths.append("device" if self.on_device else "host")

    monkeypatch.setattr(trainer_module, "NonfiniteGuard", RecordingGuard)
    common = ["trainer.eval_every=null", "scheduler.type_hint=WarmupLinear",
              "scheduler.config.warmup_steps=2", "scheduler.config.decay_steps=8"]
    faulty = common + ["loss.type_hint=FaultyCrossEntropy", "loss.config.nan_at_calls=[3]",
                       "trainer.on_nonfinite=skip"]
    # AdamW's default is the fused kernel (which skips on the device) on the CPU too, so
    # the host path needs a kernel that is not fused.
    runs = {"clean": common,
            "skip on the host": [*faulty, "optimizer.config.implementation=foreach"],
            "skip on the device": [*faulty, "optimizer.config.implementation=fused"]}
    lrs, skipped = {}, {}
    for name, args in runs.items():
        run_recipe("gpt2-debug", args, run_dir=tmp_path / name)
        lrs[name] = [r["lr"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
                     if "lr" in r]
        skipped[name] = "step 3: gradient norm nan; step skipped" in capfd.readouterr().err
    assert paths == ["device", "host", "device"]
    assert skipped == {"clean": False, "skip on the host": True, "skip on the device": True}
    assert len(set(lrs["clean"])) > 2  # the schedule does move over these steps
    assert lrs["skip on the host"] == lrs["clean"] == lrs["skip on the device"]
