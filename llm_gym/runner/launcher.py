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
continue (``recipe run`` names the run directory and whether it holds a checkpoint).
What failed workers leave behind, and how it is told apart, is in launch_failures.py.

A worker whose launcher dies (even by SIGKILL) gets SIGINT, which stops it the same way:
no worker outlives its launcher. A worker's parent is the forkserver below, which lives
as long as its children, so the kernel's parent-death signal cannot tell; a thread in
each worker waits on the launcher's pidfd instead (``_stop_when_launcher_dies``).

Starting: workers are forked from a multiprocessing forkserver that has imported torch
and the entry point's module once, instead of each importing them afresh (3-4 s of CPU
per worker; in one process that launches again, as a test session, the server stays and
a launch costs no import at all). The server is a clean process that has run nothing, so
forking it is safe, CUDA included. multiprocessing hands each worker the launcher's
working directory and sys.path, but a forked worker's environment and open files are the
server's, from when it started: the launcher's own environment goes with the arguments
and replaces it, keeping what the elastic agent set for the worker (RANK, WORLD_SIZE,
...), and a launcher whose stdout or stderr is no longer what the server writes to (a
caller redirected them since) starts a new server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.runner.launch_failures import (  # noqa: F401 (WorkerFailure, _describe: named from here)
    LaunchError,
    WorkerFailure,
    _as_user_error,
    _collect_failures,
    _describe,
    _early_signal_as_stop,
    _signal_stop,
    _WorkerUserError,
    _write_failure_record,
)

# The environment this module was imported with: in a worker, the forkserver's (or a
# spawned interpreter's) before the elastic agent added the worker's own variables.
_ENV_AT_IMPORT = dict(os.environ)

# Agent, rendezvous and worker-process-management loggers live under these names.
_AGENT_LOGGERS = (
    "torch.distributed.elastic",
    "torch.distributed.launcher",
    "torch.multiprocessing",
)


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
        start_method="forkserver",
    )
    # Imported once, in the server (see the module docstring); a server that is already
    # running keeps what it has.
    multiprocessing.set_forkserver_preload(["torch", __name__, entrypoint.__module__])
    _server_writes_where_we_do()
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
        launcher = (os.getpid(), dict(os.environ))  # with the OMP_NUM_THREADS default
        try:
            return elastic_launch(config, _worker_main)(entrypoint, launcher, *args)
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


# What the running forkserver's stdout and stderr are (None: no server started here yet).
_server_outputs: tuple[tuple[int, int] | None, ...] | None = None


def _server_writes_where_we_do() -> None:
    """Stop the forkserver if this process's stdout or stderr changed since it started
    (workers inherit the server's), so that the launch starts one that writes here."""
    global _server_outputs
    outputs = tuple(_file_identity(fd) for fd in (1, 2))
    if _server_outputs is not None and outputs != _server_outputs:
        from multiprocessing import forkserver

        stop = getattr(forkserver._forkserver, "_stop", None)  # CPython 3.8+
        if stop is not None:
            stop()  # the previous launch's workers are gone: it stops at once
    _server_outputs = outputs


def _file_identity(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


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


def _adopt_environment(launcher: dict[str, str]) -> None:
    """The launcher's environment, plus what the elastic agent set for this worker (what
    differs from the environment this module was imported with)."""
    from_agent = {k: v for k, v in os.environ.items() if _ENV_AT_IMPORT.get(k) != v}
    os.environ.clear()
    os.environ.update(launcher)
    os.environ.update(from_agent)


def _stop_when_launcher_dies(pid: int) -> None:
    """SIGINT to this worker (a stop request) when process ``pid`` ends, from a thread
    that waits on its pidfd (Linux 5.3+; elsewhere it polls once a second)."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGINT)
        return
    except (AttributeError, OSError):
        pidfd = None

    def wait_for_it() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while _alive(pid):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=wait_for_it, name="launcher-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Errors of a rank whose peer vanished (gloo's words for a closed connection).
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Read error",
              "Socket closed")
_PEER_GRACE_S = 0.5


def _lost_a_peer(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(words in str(exc) for words in _PEER_LOST)


def _worker_main(entrypoint: Callable[..., Any], launcher: tuple[int, dict[str, str]],
                 *args: Any) -> Any:
    # Runs inside each worker, under torch's error recorder, which writes
    # "<ExceptionClass>: <message>" and the traceback to a file the agent reads back.
    launcher_pid, environment = launcher
    _adopt_environment(environment)
    _stop_when_launcher_dies(launcher_pid)
    try:
        return entrypoint(*args)
    except BaseException as exc:
        stop = _early_signal_as_stop(exc)
        _write_failure_record(stop)
        if _lost_a_peer(exc):
            # The agent names the first worker it sees dead, and a forked worker's death
            # reaches it through the forkserver: give the peer that died (the cause) time
            # to be seen first, rather than this rank's consequence.
            time.sleep(_PEER_GRACE_S)
        if stop is not exc:
            raise stop from exc
        if isinstance(exc, UserError) and not isinstance(exc, _WorkerUserError):
            raise _WorkerUserError(str(exc)) from exc
        if not isinstance(exc, (Exception, KeyboardInterrupt, SystemExit)):
            # torch's recorder only writes the error file for an Exception; a stray
            # BaseException (DCP's CheckpointException is one) would arrive without a word.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


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
