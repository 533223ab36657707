"""What a file on disk is, from its first bytes, so a writer never replaces the wrong one.

Every data tool checks its outputs with ``check_outputs`` before doing any work: an output
may not be one of the tool's inputs (same file, however named: a hard link, a symbolic
link, ``dir/../x``), nor a file of another kind (a line index where a pack's ``.idx``
would go, a tokenizer where a line index would go). ``llm_gym``'s own binary formats are
told apart by their magic bytes; the two text formats by their shape.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from llm_gym.errors import UserError
from llm_gym.fileio import open_input

MAGIC_LINE_INDEX = b"LGIDX\0\0\0"
MAGIC_PACKED_BIN = b"LGYMTOK\0"
MAGIC_PACKED_IDX = b"LGYMIDX\0"

LINE_INDEX = "an llm_gym line index"
PACKED_BIN = "an llm_gym packed token file (.bin)"
PACKED_IDX = "an llm_gym packed document index (.idx)"
TOKENIZER_JSON = "a tokenizer JSON"
JSONL = "JSONL data"

_MAGICS = {MAGIC_LINE_INDEX: LINE_INDEX, MAGIC_PACKED_BIN: PACKED_BIN, MAGIC_PACKED_IDX: PACKED_IDX}
_SNIFF_BYTES = 64 << 10
# Keys that every Hugging Face tokenizer.json has near its top, in any spelling of the JSON.
_TOKENIZER_KEYS = re.compile(rb'(?<!\\)"(added_tokens|pre_tokenizer|normalizer|truncation)"\s*:')


def sniff_kind(path: Path) -> str | None:
    """Which of the files llm_gym writes ``path`` looks like, or None (absent, not a
    regular file, empty, or something else)."""
    try:
        with open_input(path) as f:  # a FIFO would block a plain open
            head = f.read(_SNIFF_BYTES)
    except (UserError, OSError):
        return None
    if kind := _MAGICS.get(head[:8]):
        return kind
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"{"):
        return None
    if len(set(_TOKENIZER_KEYS.findall(text[:4096]))) >= 2:
        return TOKENIZER_JSON
    first_line, newline, _ = text.partition(b"\n")
    if not newline and len(head) == _SNIFF_BYTES:  # a first line longer than we read
        return JSONL if first_line.startswith(b'{"') else None
    try:
        return JSONL if isinstance(json.loads(first_line), dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def check_outputs(outputs: Mapping[Path, str], inputs: Iterable[Path]) -> None:
    """Refuse outputs that would replace an input or a file of another kind.

    ``outputs`` maps each path a tool is about to write to the kind it writes there (one of
    this module's kind names); ``inputs`` are the files it reads.
    """
    existing_inputs = [(Path(p), _stat(p)) for p in inputs]
    for out, kind in outputs.items():
        out = Path(out)
        st = _stat(out)
        for source, source_st in existing_inputs:
            same = st is not None and source_st is not None and os.path.samestat(st, source_st)
            if same or _resolved(out) == _resolved(source):
                also = "" if out == source else " (the same file under another name)"
                raise UserError(
                    f"output {out} is the input {source}{also}: writing it would destroy the"
                    " input. Choose another output path"
                )
        found = sniff_kind(out) if st is not None else None
        if found is not None and found != kind:
            raise UserError(
                f"output {out} exists and is {found}, not {kind}; writing it would replace"
                " that file. Choose another output path, or remove the file first"
            )
        if (found is None and kind != JSONL and st is not None and st.st_size > 0
                and stat.S_ISREG(st.st_mode)):
            # Not a file this tool writes (a manifest, a recipe, notes, a dataset's
            # state.json): replacing it would lose what the user keeps there. (JSONL is
            # the users' own format: the demo corpus asks for --force instead.)
            raise UserError(
                f"output {out} exists and is not {kind} (its content is not one llm_gym"
                " writes); writing it would replace that file. Choose another output"
                " path, or remove the file first"
            )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
