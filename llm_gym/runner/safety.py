"""What keeps a run from losing work or corrupting it: one writer per run directory, room
to write checkpoints, a clean stop on Ctrl-C, and no training on a diverged loss."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from pathlib import Path
from types import FrameType
from typing import IO

import torch

from llm_gym.errors import UserError

LOCK_FILE = ".lock"


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C); the shell convention for SIGINT is 130."""

    exit_code = 130
    label = "stopped"


class RunDirLock:
    """An exclusive lock on a run directory, held for the whole run.

    ``flock`` is released by the kernel when the process dies, even by SIGKILL, so a
    crashed run never leaves a stale lock behind.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunDirLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until exit
        except OSError as exc:
            raise UserError(
                f"run directory {self.run_dir} is not writable: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(
                f"run directory {self.run_dir} is in use by another run (pid {holder}); "
                "wait for it to end or choose another --run-dir"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def human_size(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps the number at least 1."""
    units = ("B", "KiB", "MiB", "GiB")
    power = 0
    while n >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{n:.0f} B" if power == 0 else f"{n:.2f} {units[power]}"


def checkpoint_bytes(model: torch.nn.Module, optimizer_states_per_param: int = 2) -> int:
    """A checkpoint's size on disk: fp32 parameters plus the optimizer's per-parameter
    states (AdamW keeps two). ``numel`` of a sharded parameter is its global size."""
    numel = sum(p.numel() for p in model.parameters())
    return numel * 4 * (1 + optimizer_states_per_param)


def check_room(run_dir: Path, needed: int, keep_last: int) -> None:
    """Refuse to start when the run directory cannot take one more checkpoint.

    While a new checkpoint is written the previous ones still exist, so ``needed`` must
    fit beside the ones already there; only one extra is needed, as older ones are
    pruned after each save.
    """
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"run directory {run_dir} is not writable: {exc.strerror}") from None
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(
            f"run directory {run_dir} has {free / 2**30:.2f} GiB free, but one checkpoint "
            f"needs about {needed / 2**30:.2f} GiB (keep_last={keep_last}); free some space "
            "or choose another --run-dir"
        )


class StopRequest:
    """Turns Ctrl-C (SIGINT) or a polite kill (SIGTERM, as SLURM sends before preempting)
    into a request to stop at the next safe point.

    The loop checks ``requested`` between steps (all ranks agree before acting), saves a
    checkpoint and exits. Under a launcher the same signal often arrives twice (from the
    terminal and forwarded by the agent), so a repeat within ``REPEAT_WINDOW`` seconds is
    the same request; a later one interrupts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REPEAT_WINDOW = 2.0

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __enter__(self) -> StopRequest:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
        elif now - self.requested_at > self.REPEAT_WINDOW:
            raise KeyboardInterrupt
