"""What keeps a run from losing work or corrupting it: one writer per run directory, room
to write checkpoints, a clean stop on Ctrl-C, and no training on a diverged loss."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from types import FrameType

import torch

from llm_gym.errors import UserError
from llm_gym.run_layout import RunLayout

LOCK_FILE = RunLayout.LOCK


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C); the shell convention for SIGINT is 130."""

    exit_code = 130
    label = "stopped"


class RunDirLock:
    """An exclusive lock on a run directory, held for the whole run.

    ``flock`` is released by the kernel when the process dies, even by SIGKILL, so a
    crashed run never leaves a stale lock behind. A run that ends removes ``.lock``
    while still holding it; a run that locked the file just as it was removed notices
    (the path no longer names the file it locked) and locks the new one instead.

    ``.lock`` is opened without following a symbolic link and must be a regular file:
    a planted link would otherwise have the run truncate and write whatever it names.
    ``created``: this lock created the directory (it did not exist before).
    """

    _OPEN_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self.created = False
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        try:
            self.run_dir.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise UserError(
                f"run directory {self.run_dir} is not writable: {exc.strerror}"
            ) from None
        for _ in range(100):  # another run ending as we start: at most a few rounds
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UserError(
                    f"run directory {self.run_dir} is in use by another run (pid {holder}); "
                    "wait for it to end or choose another --run-dir"
                ) from None
            if self._names(fd):
                break
            os.close(fd)  # the previous run removed the file we locked: lock the new one
        else:
            raise UserError(f"{self.path}: could not be locked; try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        try:
            if self._names(self._fd):
                self.path.unlink()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        try:
            fd = os.open(self.path, self._OPEN_FLAGS, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                target = os.readlink(self.path) if self.path.is_symlink() else "?"
                raise UserError(f"{self.path} is a symbolic link (to {target}); a run's "
                                "lock file must be a regular file: remove it") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV):
                raise UserError(f"{self.path} is not a regular file; a run's lock file "
                                "must be one: remove it") from None
            raise UserError(
                f"run directory {self.run_dir} is not writable: {exc.strerror}"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"{self.path} is not a regular file; a run's lock file must be "
                            "one: remove it")
        return fd

    def _names(self, fd: int) -> bool:
        """Whether ``.lock`` is still the file open as ``fd``."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


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
