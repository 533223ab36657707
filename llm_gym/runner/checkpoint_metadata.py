"""A DCP checkpoint's ``.metadata``, read without running code from the file.

torch.distributed.checkpoint's ``FileSystemReader.read_metadata`` calls ``pickle.load``,
so a crafted ``.metadata`` runs whatever it names in ``generate``, ``export`` and
``--resume``. Here the file is unpickled by an unpickler that can build only the classes
DCP metadata consists of (what ``FileSystemWriter`` pickles: the dataclasses of
``torch.distributed.checkpoint.metadata``, the filesystem ``_StorageInfo``, ``torch.Size``,
dtypes, layouts, the checkpoint's path) and refuses anything else, naming the file and
the class. The result is then checked for the shape DCP relies on, so a damaged file is
an error here rather than an AttributeError deep inside DCP.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)

from llm_gym.errors import UserError

METADATA_FILE = ".metadata"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                 "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                 "_MEM_FORMAT_ENCODING"):
        allowed[(dcp_metadata.__name__, name)] = getattr(dcp_metadata, name)
    allowed[(_StorageInfo.__module__, "_StorageInfo")] = _StorageInfo
    allowed[("torch", "Size")] = torch.Size
    # Every dtype (a bf16 or fp8 checkpoint pickles its own), and the layout lookup
    # TensorProperties pickles (a dict lookup by name, nothing else).
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    # StorageMeta.checkpoint_id: the path the checkpoint was written to. Path classes only
    # join strings; ``pathlib._local`` is where Python 3.13 defines them.
    for module in ("pathlib", "pathlib._local"):
        for name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"):
            allowed[(module, name)] = getattr(__import__("pathlib"), name)
    return allowed


_ALLOWED = _allowed_globals()


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.source}: refused to load the class {module}.{name}: a checkpoint's "
                "metadata holds only DCP's own metadata classes, so this file was not "
                "written by torch.distributed.checkpoint (it may be crafted to run code); "
                "nothing from it was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(f"{self.source}: refused a persistent reference in the metadata")


def read_metadata(checkpoint: Path) -> Metadata:
    """The ``.metadata`` of the DCP checkpoint directory ``checkpoint``, unpickled with only
    DCP's metadata classes allowed and checked for the structure DCP expects.

    Raises ``UserError`` naming the file for a missing, truncated, empty, crafted or
    malformed file.
    """
    source = Path(checkpoint) / METADATA_FILE
    try:
        with open(source, "rb") as f:
            loaded = _MetadataUnpickler(f, source).load()
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"{source}: cannot read the checkpoint's metadata: "
                        f"{exc.strerror or exc}") from None
    except Exception as exc:  # truncated, empty or garbage: pickle raises many kinds
        raise UserError(f"{source}: the checkpoint's metadata is damaged "
                        f"({type(exc).__name__}: {exc or 'empty file'})") from None
    problem = _structure_problem(loaded)
    if problem:
        raise UserError(f"{source}: the checkpoint's metadata is malformed: {problem}")
    return loaded


def referenced_files(metadata: Metadata, scopes: set[str] | None = None) -> set[str]:
    """The data files (``__0_0.distcp`` ...) holding the entries whose top-level key is in
    ``scopes`` (``{"model"}``: the weights alone); all of them for ``None``."""
    return {info.relative_path for index, info in metadata.storage_data.items()
            if scopes is None or index.fqn.split(".", 1)[0] in scopes}


def _structure_problem(md: Any) -> str | None:
    if not isinstance(md, Metadata):
        return f"it holds a {type(md).__name__}, not DCP Metadata"
    entries, storage = md.state_dict_metadata, md.storage_data
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        return "state_dict_metadata and storage_data must be dicts"
    for key, entry in entries.items():
        if not isinstance(key, str):
            return f"entry name {key!r} is not a string"
        if isinstance(entry, TensorStorageMetadata):
            if not isinstance(entry.size, torch.Size) or not isinstance(
                    getattr(entry.properties, "dtype", None), torch.dtype):
                return f"entry {key} has no valid size and dtype"
            if not isinstance(entry.chunks, list):
                return f"entry {key} has no chunk list"
        elif not isinstance(entry, BytesStorageMetadata):
            return f"entry {key} is a {type(entry).__name__}"
    for index, info in storage.items():
        if not isinstance(index, MetadataIndex) or not isinstance(info, _StorageInfo):
            return "storage_data must map MetadataIndex to _StorageInfo"
        name = info.relative_path
        # Data files sit beside .metadata: a path elsewhere would read files outside the
        # checkpoint directory.
        if (not isinstance(name, str) or name in ("", ".", "..")
                or os.path.basename(name) != name or "\\" in name):
            return f"entry {index.fqn} points outside the checkpoint directory ({name!r})"
        if not all(isinstance(v, int) and v >= 0 for v in (info.offset, info.length)):
            return f"entry {index.fqn} has an invalid offset or length"
    return None
