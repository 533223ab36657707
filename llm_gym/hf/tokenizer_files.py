"""A tokenizer as Hugging Face tokenizer files, and back.

``export hf`` writes them beside the model so transformers can load both; every training
run also writes them to ``RUN_DIR/tokenizer/``, so ``generate`` and ``export`` can rebuild
the run's tokenizer on any machine without what built it there (a corpus it was trained
on, a package holding vocabulary files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_gym.data.tokenizer import EOD_TOKEN
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, open_input
from llm_gym.hf.files import write_json
from llm_gym.run_layout import RunLayout

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt")

# Where a run keeps its tokenizer's files.
RUN_TOKENIZER_DIR = RunLayout.TOKENIZER


def write_tokenizer_files(
    tokenizer: Any, out_dir: Path, *, name: str | None, max_length: int | None
) -> tuple[list[str], str | None]:
    """Write what transformers needs to rebuild ``tokenizer``; return the file names and,
    when nothing could be written, a note saying why."""
    if tokenizer is None:
        return [], "the recipe has no tokenizer: no tokenizer files were written"
    hf = getattr(tokenizer, "hf_tokenizer", None)  # HFTokenizer's Rust tokenizer
    if hf is None:
        return [], (
            f"the recipe's tokenizer ({name or type(tokenizer).__name__}) has no Hugging Face "
            "equivalent: no tokenizer files were written; users of the export must turn "
            "text into ids the way the recipe's tokenizer does"
        )
    out_dir = Path(out_dir)
    text = hf.to_str()
    with atomic_output(out_dir / "tokenizer.json", "w", encoding="utf-8") as f:
        f.write(text)
    spec = json.loads(text)
    byte_level_bpe = (spec.get("model") or {}).get("type") == "BPE" and (
        (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
    )
    eod = getattr(tokenizer, "eod_token", None) or hf.id_to_token(tokenizer.eod_id)
    tokenizer_config = {
        # GPT-2's tokenizer (fast: reads tokenizer.json) for a byte-level BPE, else the
        # generic fast tokenizer: both take every rule from tokenizer.json.
        "tokenizer_class": "GPT2Tokenizer" if byte_level_bpe else "PreTrainedTokenizerFast",
        "bos_token": eod,
        "eos_token": eod,
        "unk_token": eod,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    if max_length is not None:
        tokenizer_config["model_max_length"] = max_length
    write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    files = ["tokenizer.json", "tokenizer_config.json"]
    if byte_level_bpe:
        try:  # vocab.json, merges.txt
            files += [Path(p).name for p in hf.model.save(str(out_dir))]
        except Exception as exc:  # the Rust side raises plain Exception, a full disk too
            raise OSError(f"cannot write vocab.json and merges.txt in {out_dir}: {exc}") from None
    return files, None


def saved_eod_token(directory: Path) -> str | None:
    """The end-of-document token ``write_tokenizer_files`` recorded in ``directory``."""
    try:
        text = _read_text(Path(directory) / "tokenizer_config.json")
        config = json.loads(text) if text is not None else None
    except (UserError, ValueError, RecursionError):
        return None  # not written by us, or not readable: no recorded token
    eos = config.get("eos_token") if isinstance(config, dict) else None
    return eos if isinstance(eos, str) else None


def tokenizer_entry(directory: Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recipe ``tokenizer`` entry that reads ``directory``'s tokenizer files, with the
    end-of-document token named by config.json's ``eos_token_id``: ``HFJson`` for a
    ``tokenizer.json``, else ``GPT2BPE`` for ``vocab.json`` + ``merges.txt``; None without.

    Shared by the architectures' adapters: tokenizer files do not depend on the model.
    """
    directory = Path(directory)
    eos = config.get("eos_token_id")
    path = directory / "tokenizer.json"
    text = _read_text(path)
    if text is not None:
        from tokenizers import Tokenizer

        try:
            name = Tokenizer.from_str(text).id_to_token(eos) if eos is not None else None
        except Exception as exc:  # the Rust side raises plain Exception
            raise UserError(f"{path}: not a valid Hugging Face tokenizer.json: {exc}") from None
        return {"type_hint": "HFJson",
                "config": {"path": str(path), "eod_token": name or EOD_TOKEN}}
    encoder, merges = directory / "vocab.json", directory / "merges.txt"
    if os.path.lexists(merges) and (vocab := _read_text(encoder)) is not None:
        try:
            by_id = {v: k for k, v in json.loads(vocab).items()}
        except (ValueError, AttributeError, RecursionError) as exc:
            raise UserError(f"{encoder}: not a GPT-2 vocab.json: {exc}") from None
        return {"type_hint": "GPT2BPE",
                "config": {"encoder_json": str(encoder), "vocab_bpe": str(merges),
                           "eod_token": by_id.get(eos, EOD_TOKEN)}}
    return None


def _read_text(path: Path) -> str | None:
    """``path``'s UTF-8 text, None if there is nothing at ``path``; opened once and checked
    on the open descriptor (a FIFO or a directory there is a UserError, not a hang)."""
    if not os.path.lexists(path):
        return None
    with open_input(path, "a tokenizer file") as f:
        try:
            return f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read: {exc}") from None
