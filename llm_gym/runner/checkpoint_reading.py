"""Reading a checkpoint's DCP state: the one path every reader takes (``--resume``,
``generate``, ``export``).

``open_checkpoint`` checks before anything is deserialised: the marker's digests of the
files about to be read, then ``.metadata`` through the restricted unpickler
(checkpoint_metadata.py). ``load_state`` hands DCP that metadata (DCP's own reader would
unpickle the file again, freely), loads its non-tensor entries with
``torch.load(weights_only=True)`` (DCP's default planner uses ``weights_only=False``),
and refuses a checkpoint whose tensors are not the state's: DCP fails with a raw
"Missing key" for a tensor the checkpoint lacks and silently ignores one the model lacks.
Every failure is a ``UserError`` naming the checkpoint and the file.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import (
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import ReadItem

from llm_gym.errors import UserError
from llm_gym.runner.checkpoint_digests import verify_files
from llm_gym.runner.checkpoint_marker import MARKER, Marker
from llm_gym.runner.checkpoint_metadata import METADATA_FILE, read_metadata, referenced_files
from llm_gym.runner.distributed import World

_SHOWN = 5  # names listed per kind of mismatch, then a count


@dataclass(frozen=True)
class OpenCheckpoint:
    path: Path
    marker: Marker
    metadata: Metadata
    note: str | None  # worth telling the user (an unverified checkpoint)


def open_checkpoint(path: Path, marker: Marker, world: World, *,
                    scopes: set[str] | None = None, also: Iterable[str] = ()) -> OpenCheckpoint:
    """Verify and read the metadata of the checkpoint ``path`` whose marker is ``marker``.

    The files checked against the marker's digests: ``.metadata``, the data files holding
    the entries under ``scopes`` (``{"model"}`` for the weights alone; ``None``: every file
    the marker lists) and ``also`` (e.g. the per-rank state files). A collective call when
    ``world`` has several ranks (they share the digesting).
    """
    path = Path(path)
    recorded = marker.files
    if recorded is not None:
        verify_files(path, recorded, [METADATA_FILE], world)
    metadata = read_metadata(path)
    note = None
    if recorded is not None:
        names = referenced_files(metadata, scopes) | set(also)
        if scopes is None:
            names |= set(recorded)
        verify_files(path, recorded, names, world)
    else:
        note = (f"checkpoint {path} has no file digests in its {MARKER} marker (written by "
                "an older llm_gym): its files are not verified")
    return OpenCheckpoint(path, marker, metadata, note)


def load_state(checkpoint: OpenCheckpoint, state: dict[str, Any], *, no_dist: bool = False,
               ) -> None:
    """Fill ``state`` (``{"model": ..., "optim": ...}``, any subset) from ``checkpoint``
    in place, through DCP; a collective call unless ``no_dist``."""
    reader = _VerifiedReader(checkpoint.path, checkpoint.metadata)
    planner = _CheckedPlanner(checkpoint.path)
    try:
        with _quiet_dcp():
            dcp.load(state, storage_reader=reader, planner=planner, no_dist=no_dist)
    except UserError:
        raise
    except (Exception, dcp.CheckpointException) as exc:
        # DCP gathers every rank's errors and raises them on all ranks at once, as a
        # CheckpointException (a BaseException, hence named here).
        ours = _user_error_in(exc)
        if ours is not None:
            raise ours from None
        raise UserError(f"checkpoint {checkpoint.path} could not be read: "
                        f"{dcp_error_text(exc)}") from None


def dcp_error_text(exc: BaseException) -> str:
    """What went wrong, from a CheckpointException: its own text is a list of ranks plus
    tracebacks; the underlying per-rank exceptions say what is actually wrong."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        # Each value is (exception, traceback summary).
        errors = [f[0] if isinstance(f, tuple) else f for f in failures.values()]
        return "; ".join(sorted({f"{type(e).__name__}: {_first_line(e)}" for e in errors}))
    return f"{type(exc).__name__}: {_first_line(exc)}"


def tensor_mismatch(checkpoint: Path, state: dict[str, Any], metadata: Metadata,
                    scopes: set[str]) -> str | None:
    """What differs between the flattened ``state`` and the checkpoint's entries under
    ``scopes`` (the state's top-level keys): a message, or None when they match."""
    saved = {k: v for k, v in metadata.state_dict_metadata.items()
             if k.split(".", 1)[0] in scopes}
    missing = sorted(set(state) - set(saved))
    unexpected = sorted(set(saved) - set(state))
    shapes = []
    for key in sorted(set(state) & set(saved)):
        entry, value = saved[key], state[key]
        is_tensor = isinstance(value, torch.Tensor)
        if isinstance(entry, TensorStorageMetadata) != is_tensor:
            shapes.append(f"{key} (checkpoint: {'a tensor' if not is_tensor else 'a value'}, "
                          f"here: {'a tensor' if is_tensor else 'a value'})")
        elif is_tensor and tuple(entry.size) != tuple(value.size()):
            shapes.append(f"{key} (checkpoint {list(entry.size)}, here {list(value.size())})")
    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {_some(missing)}")
    if unexpected:
        parts.append(f"in the checkpoint but not here: {_some(unexpected)}")
    if shapes:
        parts.append(f"different shapes: {_some(shapes)}")
    if not parts:
        return None
    return (f"checkpoint {checkpoint} does not match what it is loaded into: "
            + "; ".join(parts) + ". Was it written by this recipe's model (the same n_layer, "
            "n_embd, vocab_size, bias...) and optimizer?")


class _VerifiedReader(FileSystemReader):
    """DCP's filesystem reader, given the metadata already read and checked: its own
    ``read_metadata`` would unpickle ``.metadata`` with plain ``pickle.load``."""

    def __init__(self, path: Path, metadata: Metadata) -> None:
        super().__init__(path)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = self._metadata
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _CheckedPlanner(DefaultLoadPlanner):
    """DCP's default planner, but: the state must match the checkpoint's entries, and
    non-tensor entries load with ``weights_only=True``."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def set_up_planner(self, state_dict: dict[str, Any], metadata: Metadata | None = None,
                       is_coordinator: bool = False) -> None:
        super().set_up_planner(state_dict, metadata, is_coordinator)
        assert metadata is not None  # our reader always has it
        problem = tensor_mismatch(self.checkpoint, self.state_dict, metadata,
                                  set(self.original_state_dict))
        if problem:
            raise UserError(problem)

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            loaded = torch.load(value, weights_only=True)
        except Exception as exc:
            where = self.metadata.storage_data[read_item.storage_index].relative_path
            raise UserError(f"{self.checkpoint / where}: the entry {fqn} does not load as "
                            f"plain data ({type(exc).__name__}: {_first_line(exc)})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


@contextmanager
def _quiet_dcp() -> Iterator[None]:
    # (DCP's other noise, a warning with a traceback per failed attempt to read the
    # metadata, cannot happen: our reader never fails to return it.)
    with warnings.catch_warnings():
        # "torch.distributed is ... uninitialized, assuming ... a single process": yes.
        warnings.filterwarnings("ignore", message=".*single process.*")
        yield


def _user_error_in(exc: BaseException) -> UserError | None:
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict):
        for failure in failures.values():
            error = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(error, UserError):
                return error
    return None


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = len(names) - _SHOWN
    return f"{len(names)} ({shown}{f', and {more} more' if more > 0 else ''})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
