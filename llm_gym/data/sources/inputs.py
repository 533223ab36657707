"""Paths, directories and globs -> an ordered list of input files, each with its format.

The order is the order of the arguments, each argument's files sorted by path (a glob's
matches, a directory's files, searched recursively); a Hugging Face ``save_to_disk``
directory contributes its Arrow files in the order its ``state.json`` lists them, which
is the dataset's row order. The same arguments always give the same list, which is what
lets ``--num-jobs`` jobs on different machines agree on who packs what.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file, read_json_object

FORMATS = ("auto", "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "arrow", "hf-disk")

# Suffix -> format, longest first. Inside a directory only these files are data; a file
# named on the command line with another suffix is JSONL, as it always was.
_SUFFIXES = (
    (".jsonl.gz", "jsonl.gz"), (".jsonl.zst", "jsonl.zst"), (".jsonl.zstd", "jsonl.zst"),
    (".json.gz", "jsonl.gz"), (".json.zst", "jsonl.zst"),
    (".jsonl", "jsonl"), (".parquet", "parquet"), (".arrow", "arrow"),
    (".gz", "jsonl.gz"), (".zst", "jsonl.zst"), (".zstd", "jsonl.zst"),
)
_DIRECTORY_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet", ".arrow")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str  # one of FORMATS but "auto" and "hf-disk" (its Arrow files are "arrow")

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format,
                "bytes": self.path.stat().st_size}


def format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return "jsonl"


def expand_inputs(args: list[str | Path], fmt: str = "auto") -> list[InputFile]:
    """Every input file named by ``args`` (files, directories, globs), in a fixed order;
    ``fmt`` other than ``auto`` applies to all of them. Refuses a pattern or directory
    that holds no data file, and a file named twice."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not args:
        raise UserError("no input given: name JSONL, Parquet or Arrow files, directories or globs")
    files: list[InputFile] = []
    for arg in args:
        try:
            files.extend(_expand_one(str(arg), fmt))
        except OSError as e:  # a folder or file on the way that cannot be looked into
            raise UserError(f"{e.filename or arg}: cannot be read ({e.strerror})") from None
    seen: dict[tuple[int, int], str] = {}
    for f in files:
        st = os.stat(f.path)
        key = (st.st_dev, st.st_ino)  # the same file under any name: links, hard links
        if key in seen:
            raise UserError(f"{f.path}: named twice among the inputs (also as {seen[key]});"
                            " each document would be packed twice")
        seen[key] = str(f.path)
    return files


def _expand_one(arg: str, fmt: str) -> list[InputFile]:
    path = Path(arg)
    if not path.exists() and not path.is_symlink() and _GLOB_CHARS & set(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise UserError(f"{arg}: the pattern matches no file")
        # A matched directory is searched whole, so what the pattern also matched inside
        # it (``dir/**`` matches dir/ and all below it) is already among its files.
        folders = {str(Path(m)) for m in matches if os.path.isdir(m)}
        matches = [m for m in matches
                   if not any(str(p) in folders for p in Path(m).parents)]
        return [f for m in matches for f in _expand_path(Path(m), fmt, arg)]
    return _expand_path(path, fmt, arg)


def _expand_path(path: Path, fmt: str, arg: str) -> list[InputFile]:
    if path.is_dir():
        if (dataset := _dataset_directory(path, fmt)) is not None:
            return dataset
        if fmt == "hf-disk":
            raise UserError(f"{path}: not a Hugging Face save_to_disk directory (no state.json)")
        return _directory_files(path, fmt, arg)
    if fmt == "hf-disk":
        raise UserError(f"{path}: --format hf-disk names a save_to_disk directory, not a file")
    check_input_file(path, "an input file")
    return [InputFile(path, format_of(path) if fmt == "auto" else fmt)]


def _dataset_directory(path: Path, fmt: str) -> list[InputFile] | None:
    """The Arrow files of a ``save_to_disk`` directory, in its rows' order; None for any
    other directory. A DatasetDict (splits) is refused: which split to pack is the
    user's choice, and all of them together would mix train and test."""
    if fmt not in ("auto", "hf-disk", "arrow"):
        return None
    if (path / "state.json").is_file():
        return hf_disk_files(path)
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise UserError(f"{path}: a DatasetDict of splits ({', '.join(splits)}); name one,"
                        f" e.g. {path / (splits[0] if splits else 'train')}")
    return None


def _directory_files(path: Path, fmt: str, arg: str) -> list[InputFile]:
    """The data files below ``path``, sorted by path; a ``save_to_disk`` directory met on
    the way gives its Arrow files in its own order, at its place in that order."""
    wanted = _DIRECTORY_SUFFIXES if fmt == "auto" else tuple(
        s for s, f in _SUFFIXES if f == fmt and s in _DIRECTORY_SUFFIXES)
    found: list[tuple[str, list[InputFile]]] = []

    def unreadable(error: OSError) -> None:  # os.walk would skip the directory silently
        raise UserError(f"{error.filename}: cannot be searched for input files"
                        f" ({error.strerror})")

    for root, dirs, names in os.walk(path, onerror=unreadable, followlinks=False):
        kept = []
        for d in sorted(dirs):
            if d.startswith("."):  # caches, partial downloads
                continue
            if (dataset := _dataset_directory(Path(root) / d, fmt)) is not None:
                found.append((str(Path(root) / d), dataset))
            else:
                kept.append(d)
        dirs[:] = kept
        for name in names:
            if not name.startswith(".") and name.lower().endswith(wanted):
                file = Path(root) / name
                found.append((str(file), [InputFile(file, format_of(file) if fmt == "auto"
                                                    else fmt)]))
    if not found:
        raise UserError(f"{arg}: is a directory with no {'data' if fmt == 'auto' else fmt}"
                        f" file in it (searched for {', '.join(wanted)})")
    found.sort(key=lambda entry: entry[0])
    return [f for _, files in found for f in files]


def hf_disk_files(path: Path) -> list[InputFile]:
    """The Arrow files of a ``Dataset.save_to_disk`` directory, in ``state.json`` order."""
    state = read_json_object(path / "state.json", what="a Hugging Face save_to_disk directory")
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
        raise UserError(f"{path / 'state.json'}: _data_files is not a list of"
                        " {\"filename\": ...} entries; not a datasets save_to_disk directory?")
    files = []
    for entry in entries:
        name = entry["filename"]
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path / 'state.json'}: data file {name!r} is outside {path}")
        file = path / name
        if not file.exists():
            raise UserError(f"{file}: listed in {path / 'state.json'} but missing")
        check_input_file(file, "an Arrow file of the dataset")
        files.append(InputFile(file, "arrow"))
    return files
