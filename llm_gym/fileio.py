"""Reading and writing files so that nothing a user gave us is lost, torn or waited on forever.

Outputs are written to a temporary name in the target's directory, flushed to disk, then
renamed over the target: readers see the old file or the new one, never half of either.
Because the rename replaces whatever has the target's name, a target that is not a
regular file (a device such as ``/dev/null``, a FIFO, a socket, a directory) is refused,
and so is a symbolic link: the rename would replace the link itself, not write where it
points. An output that cannot be written (full disk, quota, read-only or missing
directory, no permission) is an ``OutputError`` naming it and the cause; the temporary
file is removed and the old file stays as it was.

Inputs are opened only when they are regular files: reading a FIFO blocks until someone
writes to it, which for a data tool means forever.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, BinaryIO

from llm_gym.errors import UserError

# Errors that only writing raises: met inside an ``atomic_output`` block, they are the
# output's, whoever's code made the write.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutputError(UserError):
    """An output file could not be written; whatever was at its path is untouched."""


def default_file_mode() -> int:
    """What ``open()`` would give a new file under the current umask (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def describe_file_type(mode: int) -> str:
    """'a directory', 'a FIFO (named pipe)', ... for an ``st_mode``."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_output_target(path: Path) -> None:
    """Refuse to replace ``path`` if it exists and is anything but a regular file.

    A symbolic link is refused too rather than followed: writing through it would put
    the output outside the directory the user named, replacing it would lose the link.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return  # absent (or unreachable: creating the temporary file will say why)
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(
            f"{path}: is a symbolic link (to {os.readlink(path)}); outputs are never written"
            f" through links. Give the file it points to ({path.resolve()}) as the output,"
            " or remove the link"
        )
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(
            f"{path}: is {describe_file_type(st.st_mode)}, not a regular file; an output is"
            " written to a temporary file and renamed over its path, which would replace"
            " it. Give the path of a file to write"
        )


def output_error(path: Path, error: OSError) -> OutputError:
    """The UserError for an OSError met while creating, writing or renaming ``path``."""
    path = Path(path)
    reason = error.strerror or str(error)
    parent = path.parent
    if error.errno == errno.ENOENT and not parent.exists():
        reason = f"the directory {parent} does not exist"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST) and not parent.is_dir():
        reason = f"{_first_non_directory(parent)} is not a directory"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{reason} (in {parent})"
    return OutputError(f"{path}: cannot write the output: {reason}; any file already there"
                       " is unchanged")


def _first_non_directory(path: Path) -> Path:
    for ancestor in reversed([path, *path.parents]):
        if ancestor.exists() and not ancestor.is_dir():
            return ancestor
    return path


def make_parent_dirs(path: Path) -> None:
    """Create the directories ``path`` will be written in; failing, an OutputError."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from e


class AtomicFile:
    """A new file for ``path`` under a temporary name beside it: ``commit()`` renames it
    into place, ``discard()`` removes it. ``atomic_output`` is the usual way in; writers
    of several files that must appear together (a pack's .bin and .idx) hold several."""

    def __init__(
        self, path: Path, mode: str = "wb", *, file_mode: int | None = None, **open_kwargs: Any
    ) -> None:
        self.path = Path(path)
        check_output_target(self.path)
        try:
            fd, self.tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
        except OSError as e:
            raise output_error(self.path, e) from e
        try:
            os.chmod(self.tmp, default_file_mode() if file_mode is None else file_mode)
            self.file: IO[Any] = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            with suppress(OSError):
                os.close(fd)
            Path(self.tmp).unlink(missing_ok=True)
            raise

    def commit(self) -> None:
        """Flush to disk and rename over ``path``; on any failure, discard instead."""
        self.sync()
        self.rename()

    def sync(self) -> None:
        """Flush and fsync the data and close the file: what can fail on a full disk."""
        with self._discarded_on_failure():
            self.file.flush()
            os.fsync(self.file.fileno())  # the rename must not reach the disk before the data
            self.file.close()

    def rename(self) -> None:
        """Move the synced file over ``path``."""
        with self._discarded_on_failure():
            check_output_target(self.path)  # it may have become a directory or a device since
            os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)

    @contextmanager
    def _discarded_on_failure(self) -> Iterator[None]:
        """Any failure removes the temporary file; an OSError becomes an OutputError."""
        try:
            yield
        except OSError as e:
            self.discard()
            raise output_error(self.path, e) from e
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary file; ``path`` is untouched."""
        with suppress(OSError):  # closing flushes, which fails again on a full disk
            self.file.close()
        with suppress(OSError):
            Path(self.tmp).unlink(missing_ok=True)


@contextmanager
def atomic_output(
    path: Path, mode: str = "wb", *, file_mode: int | None = None, **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """Yield a file to write ``path``'s new content to; it replaces ``path`` only on success.

    Refuses a ``path`` that is not a regular file (see ``check_output_target``); a full
    disk or an unwritable directory is an ``OutputError`` naming ``path``.
    """
    target = AtomicFile(path, mode, file_mode=file_mode, **open_kwargs)
    try:
        yield target.file
    except OSError as e:
        target.discard()
        if e.errno in _WRITE_ERRNOS and e.filename is None:
            raise output_error(target.path, e) from e
        raise
    except BaseException:
        target.discard()
        raise
    target.commit()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power cut, not just the files' contents.

    Best effort: not every platform or file system can open and sync a directory.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_input_file(path: Path, what: str = "the input") -> os.stat_result:
    """``path``'s stat if it is a regular file (symbolic links followed), else a UserError
    saying what it is instead. ``what`` names the input in the message."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what}: {e.strerror}") from None
    _require_regular(path, st, what)
    return st


def open_input(path: Path, what: str = "the input", *, buffering: int = -1) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file.

    Checked before opening, and again on the open file (opened non-blocking, so a FIFO
    swapped in meanwhile cannot block the open either): a FIFO or a device would be
    read forever or block.
    """
    path = Path(path)
    check_input_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        _require_regular(path, os.fstat(fd), what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


_FD_DIR = Path("/proc/self/fd")


def same_file_path(f: IO[Any], path: Path) -> Path:
    """A name for the very file ``f`` has open, for a library that opens files only by
    name: ``/proc/self/fd/N`` on Linux, which reopens the open file itself, so a file
    renamed over ``path`` since it was opened (and checked) cannot be the one read; ``path``
    where there is no such directory."""
    return _FD_DIR / str(f.fileno()) if _FD_DIR.is_dir() else Path(path)


def _require_regular(path: Path, st: os.stat_result, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UserError(
            f"{path}: is {describe_file_type(st.st_mode)}, not a regular file; {what} must be"
            " a regular file (reading a FIFO or a device could block or never end)"
        )


def read_json_object(path: Path, *, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or malformed file is a
    UserError naming the file (and line and column), ``what`` saying why it is needed."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: not found ({what})")
    try:
        with open_input(path, what) as f:
            data = json.loads(f.read().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:  # json.loads of thousands of nested brackets
        raise UserError(f"{path}: JSON nested too deeply ({what})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object ({what})")
    return data
