"""Start N training processes on this machine through torch's elastic launcher.

This is what ``torchrun --standalone --nproc-per-node N`` does, called as a function:
the elastic agent does the rendezvous, sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/...
for every worker (so ``distributed_world()`` sees a torchrun launch), watches the workers
and stops them all as soon as one fails, so a crash on one rank never leaves the others
hanging in a collective.

Output: workers inherit this process's stdout/stderr unchanged (no redirection, no
prefixes), so rank 0's rich progress bar still sees a terminal. The agent's own INFO
chatter is silenced; failures are reported once, by the exception raised here.

Stopping: SIGINT/SIGTERM to the launcher is forwarded by the agent to every worker, which
stops at a step boundary and saves; a worker that stops on request (``Interrupted``,
exit code 130) keeps its exit code and label on the way back, so the job ends with
"stopped:" and the resume command whichever process got the signal. A worker that gets
the signal while still starting (before its stop handler exists, so before any step)
cannot save: the job still ends as stopped, with the caller's ``stop_hint`` saying how to
continue (``recipe run`` names the run directory and whether it holds a checkpoint). A worker whose
launcher dies (even by SIGKILL) gets SIGINT from the kernel (torch's spawn sets the
parent-death signal), which stops it the same way: no worker outlives its launcher.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# Agent, rendezvous and worker-process-management loggers live under these names.
_AGENT_LOGGERS = (
    "torch.distributed.elastic",
    "torch.distributed.launcher",
    "torch.multiprocessing",
)


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


def launch_local(
    nproc: int,
    entrypoint: Callable[..., Any],
    args: tuple = (),
    *,
    run_id: str | None = None,
    verbose: bool = False,
    stop_hint: Callable[[], str] | None = None,
) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` local worker processes; return their results.

    ``entrypoint`` must be a module-level function (workers are spawned, so it is pickled
    by name) and its return value must be picklable. The result maps each rank to what
    its worker returned.

    Raises ``UserError`` if every failed worker failed with a ``UserError`` (a bad recipe,
    checkpoint, ... is reported as the user's mistake, without traceback; with the
    workers' exit code and label, so a stop on request stays ``Interrupted``), else
    ``LaunchError`` naming each failed rank and its error. A signal to this process
    raises ``Interrupted``. ``verbose`` lets the elastic agent log at INFO. ``stop_hint``,
    called once the workers are gone, says how to continue after a stop that workers
    could not save themselves (a signal while they were starting, or past the grace
    period); without it the message speaks of --run-dir and --resume in general.

    Unless ``OMP_NUM_THREADS`` is set, each worker gets ``cpu_count // nproc`` threads so
    N workers do not oversubscribe the CPU cores. More workers than GPUs is refused;
    more than CPU cores (without CUDA) is warned about.
    """
    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    _check_workers_fit(nproc)
    # Imported here: `llm_gym --help` must not pay for importing torch.
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=run_id or f"llm_gym-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"localhost:{_free_port()}",
        # Restarting a failed training run from scratch is never what we want here;
        # resuming from a checkpoint is the runner's decision.
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    threads = str(max(1, _cpu_cores() // nproc))
    # Spawning N interpreters, importing torch and the rendezvous take seconds before
    # any worker prints: say that something is happening.
    print(f"starting {nproc} workers (the rendezvous can take a while)", file=sys.stderr,
          flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="llm_gym_launch_") as log_dir,
        _quiet_agent(verbose),
        _env_default("OMP_NUM_THREADS", threads),
    ):
        # No redirects: workers write straight to our stdout/stderr. The log dir only
        # holds each worker's error.json, read back below when something fails.
        config.logs_specs = DefaultLogsSpecs(log_dir=log_dir)
        try:
            return elastic_launch(config, _worker_main)(entrypoint, *args)
        except ChildFailedError as exc:
            failures = _collect_failures(exc.failures, Path(log_dir))
        except SignalException as exc:
            # The agent got SIGINT/SIGTERM, forwarded it to the workers and waited for
            # them (30 s, then SIGKILL); each one that stopped at a step boundary and
            # saved recorded its Interrupted, which names the checkpoint and --run-dir.
            stopped = _collect_failures({}, Path(log_dir))
            raise _signal_stop(exc.sigval, nproc, stopped, stop_hint) from None
    if all(f.user_error for f in failures.values()):
        raise _as_user_error(failures, stop_hint)
    raise LaunchError(failures)


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


def _check_workers_fit(nproc: int) -> None:
    """Refuse more workers than GPUs (each binds cuda:LOCAL_RANK); warn when CPU workers
    outnumber the cores they may run on, as they would contend for them."""
    import torch

    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            raise UserError(
                f"--nproc {nproc}: found {gpus} visible GPU{'s' if gpus != 1 else ''}"
                f"{where}; each worker needs a GPU of its own; use --nproc {gpus} or fewer"
            )
        return
    cores = _cpu_cores()
    if nproc > cores:
        print(f"warning: --nproc {nproc} exceeds the {cores} CPU core"
              f"{'s' if cores != 1 else ''} found; the workers will contend for them, and "
              f"every step will wait for the slowest (--nproc {cores} or fewer runs "
              "without contention)", file=sys.stderr, flush=True)


def _cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, as under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_main(entrypoint: Callable[..., Any], *args: Any) -> Any:
    # Runs inside each worker, under torch's error recorder, which writes
    # "<ExceptionClass>: <message>" and the traceback to a file the agent reads back.
    try:
        return entrypoint(*args)
    except BaseException as exc:
        stop = _early_signal_as_stop(exc)
        _write_failure_record(stop)
        if stop is not exc:
            raise stop from exc
        if isinstance(exc, UserError) and not isinstance(exc, _WorkerUserError):
            raise _WorkerUserError(str(exc)) from exc
        if not isinstance(exc, (Exception, KeyboardInterrupt, SystemExit)):
            # torch's recorder only writes the error file for an Exception; a stray
            # BaseException (DCP's CheckpointException is one) would arrive without a word.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


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


def _free_port() -> int:
    # The rendezvous store binds this port a moment later; the window for another
    # process to take it is tiny, and a clash fails loudly rather than silently.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _quiet_agent(verbose: bool) -> Iterator[None]:
    # torch's elastic modules each set an explicit level on their own logger at import,
    # so the parent logger's level is not enough: adjust every one of them. The
    # rendezvous backend is imported on demand; import it now so its loggers exist.
    import torch.distributed.elastic.rendezvous.c10d_rendezvous_backend  # noqa: F401
    import torch.distributed.elastic.rendezvous.dynamic_rendezvous  # noqa: F401

    names = [
        name for name in list(logging.root.manager.loggerDict) if name.startswith(_AGENT_LOGGERS)
    ]
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        # The agent logs a worker failure at ERROR with a long banner; LaunchError says
        # it once, so only CRITICAL gets through unless asked for.
        lg.setLevel(logging.INFO if verbose else logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    # Workers inherit os.environ at spawn time; set the default only for their sake.
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
