"""The ``COMPLETE`` marker: the last file of a checkpoint, written once every rank is done.

A small JSON object: ``step``, ``world_size``, ``time`` and ``files``, each file's size
and digest (see checkpoint_digests.py; older markers record a whole-file ``sha256``).
Checkpoints written before digests were recorded have no ``files``; they load, with a
note that they are unverified. Anything else that
does not parse into exactly this is a ``UserError`` naming the marker.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.runner.checkpoint_digests import ALGORITHM, ALGORITHMS, HEX_DIGITS, FileDigest

MARKER = "COMPLETE"
STEP_DIR = re.compile(r"^step_(\d{8,})$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Marker:
    step: int
    world_size: int
    files: dict[str, FileDigest] | None  # None: written before digests were recorded


def marker_bytes(step: int, world_size: int, files: dict[str, FileDigest]) -> bytes:
    return json.dumps({"step": step, "world_size": world_size, "time": time.time(),
                       "files": files}, indent=1, sort_keys=True).encode()


def has_marker(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` was completed (its marker exists; see ``read_marker``)."""
    path = Path(checkpoint) / MARKER
    return path.is_file() and not path.is_symlink()


def read_marker(checkpoint: Path) -> Marker:
    """The marker of ``checkpoint``, validated; ``UserError`` naming the file otherwise."""
    path = Path(checkpoint) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{checkpoint} is not a complete checkpoint (no {MARKER} "
                        "marker)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: the checkpoint's marker is not readable JSON "
                        f"({type(exc).__name__}: {exc})") from None
    problem = _problem(data, Path(checkpoint).name)
    if problem:
        raise UserError(f"{path}: the checkpoint's marker is malformed: {problem}")
    return Marker(data["step"], data["world_size"], data.get("files"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(data: Any, dir_name: str) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    step, world_size = data.get("step"), data.get("world_size")
    if not _is_int(step) or step < 0:
        return f"step must be a non-negative integer, got {step!r}"
    if not _is_int(world_size) or world_size < 1:
        return f"world_size must be a positive integer, got {world_size!r}"
    named = STEP_DIR.match(dir_name)
    if named and int(named.group(1)) != step:
        return f"it records step {step} but the directory is {dir_name}"
    files = data.get("files")
    if files is None:
        return None if "files" not in data else "files must be an object"
    if not isinstance(files, dict):
        return "files must be an object"
    for name, digest in files.items():
        if not (isinstance(digest, dict) and _is_int(digest.get("bytes"))
                and digest["bytes"] >= 0 and _one_hex_digest(digest)):
            return (f"files.{name} must be {{bytes: integer, {ALGORITHM}: "
                    f"{HEX_DIGITS[ALGORITHM]} hex digits}}")
    return None


def _one_hex_digest(digest: dict[str, Any]) -> bool:
    # Exactly one known algorithm: a marker naming two would leave which one is checked
    # to the reader's choice. (Older markers recorded the whole-file sha256.)
    named = [key for key in ALGORITHMS if key in digest]
    return (len(named) == 1 and isinstance(digest[named[0]], str)
            and len(digest[named[0]]) == HEX_DIGITS[named[0]]
            and _HEX_DIGEST.match(digest[named[0]]) is not None)
