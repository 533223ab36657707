"""A tokenizer as Hugging Face tokenizer files, and back.

``export hf`` writes them beside the model so transformers can load both; every training
run also writes them to ``RUN_DIR/tokenizer/``, so ``generate`` and ``export`` can rebuild
the run's tokenizer on any machine without what built it there (a corpus it was trained
on, a package holding vocabulary files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_gym.fileio import atomic_output
from llm_gym.hf.files import write_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt")

# Where a run keeps its tokenizer's files.
RUN_TOKENIZER_DIR = "tokenizer"


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
        config = json.loads((Path(directory) / "tokenizer_config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    eos = config.get("eos_token") if isinstance(config, dict) else None
    return eos if isinstance(eos, str) else None
