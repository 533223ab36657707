"""What failed workers left behind, read back by the launcher and said once.

Each worker runs under torch's error recorder, which writes its exception and traceback
to an ``error.json``; ``_worker_main`` (launcher.py) adds a ``failure.json`` beside it
with when it failed and, for a UserError, its exit code and label. From these files and
the agent's own report, the launcher tells a stop on request (exit code 130, "stopped",
whatever rank got the signal) from the user's mistake (a UserError, no traceback) and
from a crash (``LaunchError``, every failed rank named, the likely cause first).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.errors import ReportedError, UserError

# Written by a failing worker next to its error.json: when it failed (time.time()) and,
# for a UserError, its exit code and label (a stop on request is 130, "stopped").
_FAILURE_FILE = "failure.json"

# Signals that ask a run to stop (a scheduler's SIGTERM, Ctrl-C, a closed terminal): a
# worker killed by one before it could stop at a step boundary was stopped, not crashed.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

# What torch reports for a worker that wrote no error file.
_NO_MESSAGE = "<NONE>"


@dataclass(frozen=True)
class WorkerFailure:
    """What one failed worker left behind: exit code, message and traceback if recorded.

    ``user_error`` is true when the worker raised ``UserError`` (then ``message`` is that
    error's text alone, and ``user_exit_code``/``label`` are that error's: 130 and
    "stopped" for a run stopped on request).
    """

    rank: int
    exitcode: int
    message: str
    traceback: str
    user_error: bool = False
    user_exit_code: int = UserError.exit_code
    label: str = UserError.label
    # The signal (e.g. "SIGTERM") that stopped a worker still starting, before it could
    # stop at a step boundary; None for any other failure.
    signal: str | None = None


class LaunchError(ReportedError):
    """One or more workers failed; ``failures`` maps each global rank to what happened."""

    def __init__(self, failures: dict[int, WorkerFailure]) -> None:
        self.failures = failures
        super().__init__(_describe(failures))


class _WorkerUserError(UserError):
    """A UserError raised inside a worker; its class name marks it in the error file."""


def _as_user_error(failures: dict[int, WorkerFailure],
                   stop_hint: Callable[[], str] | None = None) -> UserError:
    """The workers' UserErrors as one, with their exit code and label when they agree;
    workers stopped by a signal while starting make it a stop that says how to go on."""
    early = {rank: f.signal for rank, f in failures.items() if f.signal}
    if early and len(early) == len(failures):
        return _stopped_early(sorted(set(early.values())), sorted(early), stop_hint)
    # A rank's own error, and peers the agent then stopped with SIGTERM: the error says it.
    failures = {rank: f for rank, f in failures.items() if not f.signal}
    messages = {f.message for f in failures.values()}
    kinds = {(f.user_exit_code, f.label) for f in failures.values()}
    # Usually every rank found the same mistake: say it once, as the user's error.
    message = messages.pop() if len(messages) == 1 else _describe(failures)
    exit_code, label = kinds.pop() if len(kinds) == 1 else (UserError.exit_code,
                                                             UserError.label)
    from llm_gym.runner.safety import Interrupted

    if (exit_code, label) == (Interrupted.exit_code, Interrupted.label):
        return Interrupted(message)
    error = UserError(message)
    error.exit_code, error.label = exit_code, label
    return error


def _signal_stop(sig: signal.Signals, nproc: int, recorded: dict[int, WorkerFailure],
                 stop_hint: Callable[[], str] | None = None) -> UserError:
    from llm_gym.runner.safety import Interrupted

    stops = {r: f for r, f in recorded.items()
             if f.user_exit_code == Interrupted.exit_code and not f.signal}
    if len(stops) == nproc:
        return _as_user_error(stops)  # every worker saved: their words, with --run-dir
    missing = sorted(set(range(nproc)) - set(stops))
    return _stopped_early([sig.name], missing, stop_hint,
                          why="still starting, or killed after the grace period")


_GENERAL_HINT = ("the run directory keeps its newest complete checkpoint, if any; continue "
                 "with the same command and --run-dir and --resume")


def _stopped_early(signals: list[str], ranks: list[int], stop_hint: Callable[[], str] | None,
                   why: str = "still starting") -> UserError:
    """A stop on request that some ranks could not save: what happened, and how to go on."""
    from llm_gym.runner.safety import Interrupted

    who = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
    return Interrupted(
        f"interrupted by signal {'/'.join(signals)} before {who} could stop at a step "
        f"boundary and save ({why}); {stop_hint() if stop_hint else _GENERAL_HINT}"
    )


def _early_signal_as_stop(exc: BaseException) -> BaseException:
    """torch's worker wrapper turns SIGTERM/SIGINT before our stop handler exists (the
    worker still starting) into a ``SignalException``: that is a stop on request, not a
    crash, so it travels as a stop (exit code 130, "stopped") naming the signal."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    if not isinstance(exc, SignalException):
        return exc
    from llm_gym.runner.safety import Interrupted

    stop = _WorkerUserError(f"stopped by {signal.Signals(exc.sigval).name} before it could "
                            "stop at a step boundary")
    stop.exit_code, stop.label = Interrupted.exit_code, Interrupted.label
    stop.signal = signal.Signals(exc.sigval).name  # type: ignore[attr-defined]
    return stop


def _write_failure_record(exc: BaseException) -> None:
    from llm_gym.runner.distributed import FAILED_AT_ATTR

    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file:
        return
    record: dict[str, Any] = {"failed_at": getattr(exc, FAILED_AT_ATTR, time.time())}
    if isinstance(exc, UserError):
        record.update(exit_code=exc.exit_code, label=exc.label)
    if getattr(exc, "signal", None):
        record["signal"] = exc.signal  # type: ignore[attr-defined]
    Path(error_file).with_name(_FAILURE_FILE).write_text(json.dumps(record))


def _collect_failures(reported: dict[int, Any], log_dir: Path) -> dict[int, WorkerFailure]:
    """Every failed rank, the earliest failure first.

    The agent reports only the ranks it saw dead when it stopped the group, often not
    the one that failed first (a rank whose peer vanished dies of a connection reset
    sooner than the culprit finishes exiting). Each worker's error.json is on disk, so
    read them all, and order by the time each worker says it failed.
    """
    found: dict[int, tuple[float, WorkerFailure]] = {}
    for rank, failure in reported.items():
        message = _error_message(failure.error_file_data)
        if not message or message == _NO_MESSAGE:
            message = f"exited with code {failure.exitcode} without recording an error"
        when = float("inf")
        if failure.exitcode < 0:
            message = f"killed by signal {-failure.exitcode} ({failure.signal_name()})"
            # It could not say when; its peers' errors (connection reset) are usually
            # the consequence, so a killed worker comes first.
            when = float("-inf")
        traceback = _error_traceback(failure.error_file_data)
        found[rank] = (when, _failure(rank, failure.exitcode, message, traceback, {}))
        if -failure.exitcode in _STOP_SIGNALS:  # a stop on request it had no time to obey
            found[rank] = (when, WorkerFailure(
                rank, failure.exitcode, message, traceback, user_error=True,
                user_exit_code=130, label="stopped", signal=failure.signal_name()))
    # One node, so the local rank in the path is the global rank.
    for path in log_dir.glob("*/attempt_*/*/error.json"):
        try:
            rank = int(path.parent.name)
            data = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        exitcode = found[rank][1].exitcode if rank in found else 1
        if exitcode < 0:
            continue  # killed by a signal: what it recorded before is not why it died
        record = _failure_record(path)
        failure = _failure(rank, exitcode, _error_message(data), _error_traceback(data), record)
        found[rank] = (float(record.get("failed_at", path.stat().st_mtime)), failure)
    ordered = sorted(found.items(), key=lambda item: (item[1][0], item[0]))
    return {rank: failure for rank, (_, failure) in ordered}


def _failure(rank: int, exitcode: int, message: str, traceback: str,
             record: dict[str, Any]) -> WorkerFailure:
    # The marker class name in the recorded message says the worker raised a UserError.
    marker = f"{_WorkerUserError.__name__}: "
    if not message.startswith(marker):
        return WorkerFailure(rank, exitcode, message, traceback)
    return WorkerFailure(
        rank, exitcode, message.removeprefix(marker), traceback, user_error=True,
        user_exit_code=int(record.get("exit_code", UserError.exit_code)),
        label=str(record.get("label", UserError.label)),
        signal=str(record["signal"]) if record.get("signal") else None,
    )


def _failure_record(error_file: Path) -> dict[str, Any]:
    """What the worker wrote beside its error.json; {} if it wrote nothing readable."""
    try:
        record = json.loads(error_file.with_name(_FAILURE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _error_message(data: Any) -> str:
    # torch's error recorder writes {"message": {"message": ..., "extraInfo": {...}}};
    # older or custom writers put a plain string there.
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        return str(message.get("message", ""))
    return str(message or "")


def _error_traceback(data: Any) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        return str(message.get("extraInfo", {}).get("py_callstack", ""))
    return ""


def _describe(failures: dict[int, WorkerFailure]) -> str:
    if len(failures) == 1:
        headline = f"worker rank {next(iter(failures))} failed"
    else:
        ranks = ", ".join(str(r) for r in failures)
        headline = f"worker ranks {ranks} failed (the likely cause first)"
    # Ranks that agreed on one failure (a checkpoint every rank could not write) report
    # the same words: say them once, for all of those ranks.
    same: dict[tuple[int, str], list[int]] = {}
    for failure in failures.values():
        same.setdefault((failure.exitcode, failure.message), []).append(failure.rank)
    lines = [headline]
    for (exitcode, message), ranks in same.items():
        who = "rank" if len(ranks) == 1 else "ranks"
        lines.append(f"  {who} {', '.join(map(str, ranks))} (exit code {exitcode}): {message}")
    return "\n".join(lines)
