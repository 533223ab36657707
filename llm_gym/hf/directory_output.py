"""Writing a directory's worth of files as one step: all of them appear, or none.

``export hf`` and ``import hf`` write several files that only make sense together (a
``config.json`` beside other weights is a different model). They are written into a
temporary directory beside the target, ``.NAME.XXXXXXXX.tmp/new/``, and moved into place
only once every one of them is complete:

- an absent or empty target: the temporary directory is renamed to it, one atomic step;
- a non-empty target (only where the caller allows it, ``replace_files``): each new file
  replaces the file of its name, after the old one is hard-linked into
  ``.NAME.XXXXXXXX.tmp/old/``. Every file of the target is at every moment either its
  old or its new version, never absent or torn; a failure (an exception, Ctrl-C) puts
  the old ones back, and only when all new files are in is the old set deleted. A crash
  of the machine in that window leaves a mix, with the old versions in ``old/`` to move
  back. Files the write does not produce are never touched.

A failure before the move (a full disk, an unwritable directory, an exception halfway)
removes the temporary directory and any parent directory created for the target: the
target is exactly as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from llm_gym.errors import UserError
from llm_gym.fileio import fsync_dir

# rename(2) cannot put a directory over this target: it holds files, or is a mount point.
_NOT_RENAMEABLE = (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY, errno.EXDEV)


@dataclass
class DirectoryOutput:
    """Where to write (``path``) and, after the move, what it did to the target."""

    target: Path
    path: Path  # the temporary directory to write the files into
    replace_files: bool
    refusal: str  # what to tell a user whose target is not empty, when that is refused
    replaced: list[str] = field(default_factory=list)  # old files a new one replaced
    kept: list[str] = field(default_factory=list)  # the target's files left as they were


def existing_entries(target: Path) -> list[str]:
    """The names in ``target`` (none if absent); ``UserError`` if it is not a directory."""
    if not target.exists() and not target.is_symlink():
        return []
    if not target.is_dir():
        raise UserError(f"{target}: exists and is not a directory")
    try:
        return sorted(os.listdir(target))
    except OSError as exc:
        raise UserError(f"{target}: cannot list the directory: {exc.strerror}") from None


@contextmanager
def directory_output(
    target: Path, *, replace_files: bool, refusal: str
) -> Iterator[DirectoryOutput]:
    """Yield a ``DirectoryOutput`` whose ``path`` receives the files; they are moved into
    ``target`` when the block ends without an exception, and discarded otherwise.

    A non-empty ``target`` is refused (``refusal`` says how to proceed) unless
    ``replace_files``; then only the files written replace theirs in ``target``.
    """
    target = Path(target).resolve()  # a link to a directory means that directory
    _refuse_unless_allowed(target, existing_entries(target), replace_files, refusal)
    created = _make_parents(target)
    try:
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".tmp"))
    except OSError as exc:
        _remove_created(created)
        raise _write_error(target, exc) from None
    output = DirectoryOutput(target, staging / "new", replace_files, refusal)
    try:
        output.path.mkdir()
        (staging / "old").mkdir()
        yield output
        _commit(output, staging)
    except OSError as exc:
        raise _write_error(target, exc, staging) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.exists():
            _remove_created(created)


def _commit(output: DirectoryOutput, staging: Path) -> None:
    target, new = output.target, output.path
    names = sorted(os.listdir(new))
    for name in names:
        _fsync_tree(new / name)  # not every writer syncs (the tokenizers' Rust side)
    fsync_dir(new)
    with suppress(OSError):  # an empty directory being replaced keeps its permissions
        os.chmod(new, stat.S_IMODE(os.stat(target).st_mode))
    try:
        os.rename(new, target)
    except OSError as exc:
        if exc.errno not in _NOT_RENAMEABLE:
            raise
    else:
        fsync_dir(target.parent)
        return
    existing = existing_entries(target)
    _refuse_unless_allowed(target, existing, output.replace_files, output.refusal)
    for name in names:
        if name in existing and not stat.S_ISREG(os.lstat(target / name).st_mode):
            raise UserError(f"{target / name}: is not a regular file, so it is not replaced; "
                            f"{target} is unchanged")
    output.replaced = _swap_in(names, new, staging / "old", target)
    output.kept = [name for name in existing if name not in names]


def _swap_in(names: list[str], new: Path, old: Path, target: Path) -> list[str]:
    """Move ``names`` from ``new`` into ``target``, keeping the versions they replace in
    ``old`` until all are in; on any failure, put ``target`` back as it was."""
    replaced: list[str] = []
    moved: list[str] = []
    try:
        for name in names:
            if (target / name).exists():
                try:  # a second name for the old file: the target's name never goes missing
                    os.link(target / name, old / name, follow_symlinks=False)
                except OSError:  # a file system without hard links
                    os.rename(target / name, old / name)
                replaced.append(name)
            os.replace(new / name, target / name)
            moved.append(name)
        fsync_dir(target)
    except BaseException:
        for name in reversed(moved):
            if name in replaced:
                os.replace(old / name, target / name)
            else:
                (target / name).unlink()
        for name in set(replaced) - set(moved):  # renamed aside, its new one not yet in
            os.replace(old / name, target / name)
        fsync_dir(target)
        raise
    return replaced


def _refuse_unless_allowed(target: Path, existing: list[str], replace_files: bool,
                           refusal: str) -> None:
    if existing and not replace_files:
        shown = ", ".join(existing[:10]) + (f" and {len(existing) - 10} more"
                                            if len(existing) > 10 else "")
        raise UserError(f"{target}: is not empty (it holds {shown}); {refusal}")


def _make_parents(target: Path) -> list[Path]:
    """Create ``target``'s missing parents; return them, deepest first, to remove on failure."""
    missing = [p for p in target.parents if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_created(missing)
        raise _write_error(target, exc) from None
    return missing


def _remove_created(created: list[Path]) -> None:
    for directory in created:  # deepest first; rmdir leaves any a concurrent writer filled
        with suppress(OSError):
            directory.rmdir()


def _fsync_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _fsync_tree(child)
        fsync_dir(path)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(target: Path, exc: OSError, staging: Path | None = None) -> UserError:
    # The temporary directory's paths mean nothing to the user; anything else may help.
    named = exc.filename and (staging is None or not str(exc.filename).startswith(str(staging)))
    where = f" ({exc.filename})" if named else ""
    return UserError(f"{target}: cannot write the output: {exc.strerror or exc}{where}; "
                     f"{target} is unchanged")
