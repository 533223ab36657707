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

A worker whose launcher dies (even by SIGKILL) gets SIGINT from the kernel (torch's spawn sets the
parent-death signal), which stops it the same way: no worker outlives its launcher.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
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
