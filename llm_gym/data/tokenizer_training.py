"""Train a byte-level BPE tokenizer (GPT-2 style) on a corpus.

The corpus is read as ``tools pack`` reads it (llm_gym/data/sources): JSONL, gzip or
zstd JSONL, Parquet, Arrow and ``save_to_disk`` directories, given as files, directories
and globs, with the same ``field`` and bad-line handling, so a tokenizer can be trained
on exactly what will be packed.

Deterministic: the same corpus, vocabulary size and library version give a byte-identical
``tokenizer.json`` (the trainer breaks count ties by token order, not by hash order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm_gym.data.file_kinds import TOKENIZER_JSON, check_outputs
from llm_gym.data.jsonl_texts import OnBadLine, check_on_bad_line
from llm_gym.data.sources import expand_inputs, iter_texts
from llm_gym.data.tokenizer import EOD_TOKEN
from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, make_parent_dirs


def train_bpe_tokenizer(
    corpus: str | Path | Sequence[str | Path],
    vocab_size: int,
    out: Path,
    field: str = "text",
    *,
    input_format: str = "auto",
    on_bad_line: OnBadLine = "fail",
    on_skip: Callable[[str, str], None] | None = None,
) -> Path:
    """Train on the ``field`` texts of ``corpus``; write ``out`` (a tokenizer.json).

    ``corpus`` is one input or several (files, directories, globs; see
    ``data.sources.expand_inputs``), read in order; ``input_format`` as ``tools pack
    --format``. The vocabulary holds ``<|endoftext|>`` (id 0), the 256 byte symbols, then
    merges up to ``vocab_size``. ``out`` is replaced atomically, so a crash never leaves
    half a file; an ``out`` that is an input or a file of another kind is refused before
    training. A bad line or row raises, or with ``on_bad_line="skip"`` is left out and
    passed to ``on_skip(where, reason)`` (``file:line``, or ``file: row N``).
    """
    out = Path(out)
    check_on_bad_line(on_bad_line)
    named = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    files = expand_inputs(named, input_format)
    check_outputs({out: TOKENIZER_JSON}, [f.path for f in files])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise UserError(
            f"vocab_size must be at least {len(alphabet) + 1} (bytes + eod), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD_TOKEN],
        # Every byte gets an id even if the corpus lacks it, so no text is ever unencodable.
        initial_alphabet=alphabet,
        show_progress=False,
    )
    seen = 0

    def texts():  # noqa: ANN202
        nonlocal seen
        for text in iter_texts(files, field, on_bad_line=on_bad_line, on_skip=on_skip):
            seen += 1
            yield text

    tok.train_from_iterator(texts(), trainer)
    if seen == 0:
        where = ", ".join(str(f.path) for f in files)
        raise UserError(f"{where}: no documents to train a tokenizer on")
    make_parent_dirs(out)
    with atomic_output(out, "w", encoding="utf-8") as f:
        f.write(tok.to_str(pretty=True))
    return out
