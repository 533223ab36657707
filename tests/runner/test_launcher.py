"""launch_local(): N workers through torch's elastic agent; failures name the rank."""

from __future__ import annotations

import time

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.launcher import LaunchError, launch_local

from . import dist_helpers as h


def test_a_failing_rank_is_named_quickly_and_rank0_output_reaches_the_terminal(
    capfd: pytest.CaptureFixture[str],
) -> None:
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch_local(2, h.print_then_fail_on, (1,))
    elapsed = time.monotonic() - start
    failures = info.value.failures
    # Rank 1 failed first; rank 0 died of the broken connection afterwards (or was stopped).
    assert next(iter(failures)) == 1
    assert failures[1].message == "ValueError: deliberate failure on rank 1"
    assert "print_then_fail_on" in failures[1].traceback
    assert "rank 1" in str(info.value)
    assert "deliberate failure on rank 1" in str(info.value)
    assert elapsed < 60  # gloo's default timeout is 30 minutes: no hang
    out, err = capfd.readouterr()
    assert "hello from rank 0" in out
    # The elastic agent's own banners stay out of the user's terminal.
    assert "torch.distributed.elastic" not in err
    assert "ChildFailedError" not in err


def test_a_user_error_in_a_worker_surfaces_as_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        launch_local(1, h.raise_user_error, ("the recipe is wrong",))
    assert str(info.value) == "the recipe is wrong"
    assert not isinstance(info.value, LaunchError)


def test_nproc_must_be_positive() -> None:
    with pytest.raises(UserError, match="nproc"):
        launch_local(0, h.raise_user_error, ("unused",))


def test_ranks_that_fail_alike_are_reported_once() -> None:
    from llm_gym.runner.launcher import WorkerFailure, _describe

    disk = "ReportedError: step 6: writing the checkpoint failed (no space)"
    failures = {r: WorkerFailure(r, 1, disk, "") for r in (2, 0, 1)}
    failures[3] = WorkerFailure(3, -9, "killed by signal 9 (SIGKILL)", "")
    text = _describe(failures)
    assert text.count("writing the checkpoint failed") == 1
    assert f"  ranks 2, 0, 1 (exit code 1): {disk}" in text  # the likely-cause order kept
    assert "  rank 3 (exit code -9): killed by signal 9 (SIGKILL)" in text
