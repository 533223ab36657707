"""A worker stopped by SIGTERM before it could save (still starting, before any
checkpoint) ends the job as stopped (exit 130), and the message names the run directory
and whether there is a checkpoint to resume from (``recipe run`` passes the hint)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from llm_gym.runner import entry, launch_failures, launcher
from llm_gym.runner.launch_failures import WorkerFailure
from llm_gym.runner.launcher import launch_local
from llm_gym.runner.safety import Interrupted

from . import stop_hint_helpers as sh


def _hint() -> str:
    return "continue with --run-dir runs/x --resume"


def test_a_launcher_signal_before_the_workers_saved_names_the_hint():
    error = launch_failures._signal_stop(signal.SIGTERM, 2, {}, _hint)
    assert isinstance(error, Interrupted) and error.exit_code == 130
    assert str(error) == ("interrupted by signal SIGTERM before ranks 0, 1 could stop at a "
                          "step boundary and save (still starting, or killed after the "
                          "grace period); continue with --run-dir runs/x --resume")


def test_workers_killed_while_starting_are_a_stop_with_the_hint():
    failures = {1: WorkerFailure(1, 1, "stopped by SIGTERM", "", True, 130,
                                 "stopped", signal="SIGTERM"),
                0: WorkerFailure(0, 1, "stopped by SIGTERM", "", True, 130,
                                 "stopped", signal="SIGTERM")}
    error = launch_failures._as_user_error(failures, _hint)
    assert isinstance(error, Interrupted)
    assert "signal SIGTERM before ranks 0, 1 could stop" in str(error)
    assert str(error).endswith("; continue with --run-dir runs/x --resume")


def test_a_real_error_is_not_hidden_by_peers_the_agent_then_stopped():
    failures = {1: WorkerFailure(1, 1, "the recipe is wrong", "", True),
                0: WorkerFailure(0, -15, "killed by signal 15 (SIGTERM)", "", True, 130,
                                 "stopped", signal="SIGTERM")}
    error = launch_failures._as_user_error(failures, _hint)
    assert not isinstance(error, Interrupted) and str(error) == "the recipe is wrong"


def test_a_worker_killed_by_sigterm_counts_as_stopped_not_crashed(tmp_path):
    class Killed:  # what the agent reports for a worker the signal's default action ended
        exitcode, error_file_data = -15, {}

        def signal_name(self) -> str:
            return "SIGTERM"

    failure = launch_failures._collect_failures({1: Killed()}, tmp_path)[1]
    assert failure.user_error and failure.signal == "SIGTERM"
    assert failure.user_exit_code == 130


def test_a_worker_records_an_early_signal_as_a_stop(tmp_path, monkeypatch):
    """torch's wrapper raises SignalException for SIGTERM before our handler exists."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))

    def starting() -> None:
        raise SignalException("Process 1 got signal: 15", signal.SIGTERM)

    with pytest.raises(launch_failures._WorkerUserError) as stopped:
        launcher._worker_main(starting, (os.getpid(), dict(os.environ)))
    assert (stopped.value.exit_code, stopped.value.label) == (130, "stopped")
    record = json.loads((tmp_path / "failure.json").read_text())
    assert record["signal"] == "SIGTERM" and record["exit_code"] == 130
    failure = launch_failures._failure(1, 1, f"_WorkerUserError: {stopped.value}", "", record)
    assert failure.user_error and failure.signal == "SIGTERM"


def test_the_run_hint_says_there_is_nothing_to_resume_without_a_checkpoint(tmp_path):
    hint = entry._stop_hint(tmp_path / "run")()
    assert hint == (f"no checkpoint was written to {tmp_path}/run, so there is nothing to "
                    f"resume; start again with the same command and --run-dir {tmp_path}/run")


def test_the_run_hint_names_the_checkpoint_to_resume_from(tmp_path, monkeypatch):
    step = tmp_path / "run" / "checkpoints" / "step_000004"
    monkeypatch.setattr("llm_gym.runner.checkpoint.latest_checkpoint", lambda run_dir: step)
    assert entry._stop_hint(tmp_path / "run")() == (
        f"{tmp_path}/run keeps the checkpoint step_000004; continue with the same command "
        f"and --run-dir {tmp_path}/run --resume")


@pytest.mark.dist
def test_sigterm_to_a_starting_worker_stops_the_job_with_the_hint():
    with pytest.raises(Interrupted) as stopped:
        launch_local(2, sh.killed_before_any_handler, (1,), stop_hint=_hint)
    assert stopped.value.exit_code == 130
    assert "signal SIGTERM before rank" in str(stopped.value)
    assert str(stopped.value).endswith("continue with --run-dir runs/x --resume")
