"""launch_local(): N workers through torch's elastic agent; failures name the rank."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_gym.errors import UserError
from llm_gym.runner.launcher import LaunchError, launch_local
from tests.conftest import REPO

from . import dist_helpers as h
from . import launcher_helpers as lh


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
    assert err.count("starting 2 workers") == 1  # said once, before the long rendezvous
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


# --- stopping on request -----------------------------------------------------------------


def test_one_worker_stopped_by_sigterm_stops_the_job_as_interrupted(tmp_path) -> None:
    """The worker's Interrupted keeps exit code 130 and its label across the agent."""
    from llm_gym.runner.safety import Interrupted

    with pytest.raises(Interrupted) as info:
        launch_local(2, lh.stop_when_asked, (str(tmp_path), 1))
    assert info.value.exit_code == 130 and info.value.label == "stopped"
    assert str(info.value) == "interrupted at step 4; continue with --resume"


def test_different_user_errors_keep_the_plain_exit_code() -> None:
    from llm_gym.runner.launcher import WorkerFailure, _as_user_error

    failures = {0: WorkerFailure(0, 1, "stopped here", "", True, 130, "stopped"),
                1: WorkerFailure(1, 1, "bad recipe", "", True, 2, "error")}
    error = _as_user_error(failures)
    assert (error.exit_code, error.label) == (2, "error")
    assert "stopped here" in str(error) and "bad recipe" in str(error)


def _start_launcher(ready_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.runner.launcher_helpers",
                             str(ready_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(lh.pid_files(ready_dir)) < 2:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.05)
    return proc


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _workers_gone(ready_dir: Path, within: float) -> bool:
    pids = [int(p.read_text()) for p in lh.pid_files(ready_dir)]
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_to_the_launcher_stops_every_worker_and_exits_130(tmp_path) -> None:
    proc = _start_launcher(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # The workers' own words, which name what to resume from; no traceback.
    assert err.splitlines()[-1].startswith("stopped: interrupted at step "), err
    assert "--resume" in err and "Traceback" not in err
    assert _workers_gone(tmp_path, within=1.0)


@pytest.mark.dist
def test_workers_stop_when_their_launcher_is_killed(tmp_path) -> None:
    """torch's spawn gives each worker SIGINT when its parent dies: a stop request."""
    proc = _start_launcher(tmp_path)
    proc.kill()  # SIGKILL: the agent cannot forward anything
    proc.communicate(timeout=60)
    assert _workers_gone(tmp_path, within=20.0)


def test_each_launch_gives_workers_the_launchers_environment_of_the_moment(monkeypatch):
    """Workers fork from a server started at the first launch; what the environment holds
    at each launch (set, changed, removed) is what the workers see, with their ranks."""
    from tests.runner.launcher_helpers import environment_seen

    names = ["LLM_GYM_PROBE", "LLM_GYM_PROBE_GONE", "RANK", "WORLD_SIZE"]
    monkeypatch.setenv("LLM_GYM_PROBE", "first")
    monkeypatch.setenv("LLM_GYM_PROBE_GONE", "here")
    first = launch_local(2, environment_seen, (names,))
    monkeypatch.setenv("LLM_GYM_PROBE", "second")
    monkeypatch.delenv("LLM_GYM_PROBE_GONE")
    second = launch_local(2, environment_seen, (names,))
    for rank in (0, 1):
        assert first[rank] == {"LLM_GYM_PROBE": "first", "LLM_GYM_PROBE_GONE": "here",
                               "RANK": str(rank), "WORLD_SIZE": "2"}
        assert second[rank] == {"LLM_GYM_PROBE": "second", "LLM_GYM_PROBE_GONE": None,
                                "RANK": str(rank), "WORLD_SIZE": "2"}


# --- how many workers fit -----------------------------------------------------------------


def test_more_workers_than_cores_is_warned_about(monkeypatch, capsys) -> None:
    from llm_gym.runner import launcher

    monkeypatch.setattr(launcher, "_cpu_cores", lambda: 2)
    launcher._check_workers_fit(2)
    assert capsys.readouterr().err == ""
    launcher._check_workers_fit(1000)
    err = capsys.readouterr().err
    assert "--nproc 1000 exceeds the 2 CPU cores found" in err and "contend" in err


def test_more_workers_than_gpus_is_refused(monkeypatch) -> None:
    import torch

    from llm_gym.runner import launcher

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    launcher._check_workers_fit(1)
    with pytest.raises(UserError, match=r"--nproc 2: found 1 visible GPU \(CUDA_VISIBLE_DEV"):
        launcher._check_workers_fit(2)
