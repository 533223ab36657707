"""Against transformers itself: exported models load in GPT2LMHeadModel with the same
logits, models saved by transformers import with the same logits, and tokenizers agree.

transformers is an optional test dependency (not a project dependency), hence the skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (optional test dependency)"
)
import safetensors.torch  # noqa: E402  - a dependency of transformers

from llm_gym.data.tokenizer_training import train_bpe_tokenizer  # noqa: E402
from llm_gym.hf.export import export_hf  # noqa: E402
from llm_gym.hf.files import write_model_dir  # noqa: E402
from llm_gym.hf.importing import import_hf  # noqa: E402
from llm_gym.hf.safetensors import save_file  # noqa: E402
from llm_gym.hf.tokenizer_files import write_tokenizer_files  # noqa: E402
from llm_gym.runner.loading_model import load_run_model  # noqa: E402
from llm_gym_components.models.gpt2_hf import GPT2HFAdapter  # noqa: E402
from llm_gym_components.tokenizers import GPT2BPETokenizer, HFJsonTokenizer  # noqa: E402
from tests.hf.conftest import max_diff, random_ids, small_gpt2  # noqa: E402

TEXT = "Return the value of x.  Hello wörld €€ 12345 done\n\n  end \t they'll"
TOLERANCE = 1e-4  # fp32; measured differences are ~1e-7


def hf_model(directory: Path):
    return transformers.GPT2LMHeadModel.from_pretrained(directory).eval()


@pytest.fixture(scope="module")
def bpe_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer.json, trained as `tools tokenizer train` would."""
    root = tmp_path_factory.mktemp("bpe")
    words = "the value of a function returns an object with its name and type".split()
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(300):
            text = " ".join(words[(i * k) % len(words)] for k in range(1, 12))
            f.write(json.dumps({"text": f"{text}. Return {i}!"}) + "\n")
    return train_bpe_tokenizer(root / "corpus.jsonl", 300, root / "tokenizer.json")


def test_safetensors_files_match_the_reference_library(tmp_path: Path) -> None:
    _, tensors = GPT2HFAdapter().to_hf(small_gpt2(), eod_id=0)
    tensors = {**tensors, "bf16": torch.ones(3, dtype=torch.bfloat16), "i64": torch.arange(5)}
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()},
                                tmp_path / "ref.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors").read_bytes()


@pytest.mark.parametrize("bias", [True, False])
def test_exported_model_has_the_same_logits_in_transformers(tmp_path: Path, bias: bool) -> None:
    model = small_gpt2(bias=bias)
    config, tensors = GPT2HFAdapter().to_hf(model, eod_id=0)
    write_model_dir(tmp_path, config, tensors)
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(hf_model(tmp_path)(ids).logits, model(ids)) < TOLERANCE


def test_exported_run_has_the_same_logits_in_transformers(debug_run: Path,
                                                          tmp_path: Path) -> None:
    export_hf(debug_run, tmp_path)
    ours = load_run_model(debug_run).model
    ids = random_ids(vocab_size=257, seq=32)
    with torch.no_grad():
        assert max_diff(hf_model(tmp_path)(ids).logits, ours(ids)) < TOLERANCE


def test_model_saved_by_transformers_imports_with_the_same_logits(
    bpe_json: Path, tmp_path: Path
) -> None:
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_json),
                                                   eos_token="<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=len(hf_tok), n_positions=32, n_embd=48,
                                     n_layer=2, n_head=3, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    source = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random biases and norms, so a mapping slip cannot hide
        for p in source.parameters():
            p.normal_(0.0, 0.2)
    source.save_pretrained(tmp_path / "src")
    hf_tok.save_pretrained(tmp_path / "src")

    import_hf(tmp_path / "src", tmp_path / "run", base="gpt2-debug")
    run = load_run_model(tmp_path / "run")
    ids = random_ids(vocab_size=len(hf_tok), seq=32)
    with torch.no_grad():
        assert max_diff(source(ids).logits, run.model(ids)) < TOLERANCE
    assert isinstance(run.tokenizer, HFJsonTokenizer) and run.tokenizer.eod_id == 0
    assert run.tokenizer.encode(TEXT) == hf_tok(TEXT)["input_ids"]


def test_exported_bpe_tokenizers_tokenize_alike_in_transformers(
    bpe_json: Path, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    hf_json = HFJsonTokenizer(bpe_json)
    Tokenizer.from_file(str(bpe_json)).model.save(str(tmp_path))  # vocab.json, merges.txt
    gpt2_bpe = GPT2BPETokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")
    for name, ours in (("HFJson", hf_json), ("GPT2BPE", gpt2_bpe)):
        out = tmp_path / name
        out.mkdir()
        files, note = write_tokenizer_files(ours, out, name=name, max_length=32)
        assert note is None and set(files) == {"tokenizer.json", "tokenizer_config.json",
                                               "vocab.json", "merges.txt"}
        fast = transformers.AutoTokenizer.from_pretrained(out)
        assert fast(TEXT)["input_ids"] == ours.encode(TEXT), name
        assert fast.eos_token_id == ours.eod_id and fast.model_max_length == 32
        # vocab.json + merges.txt alone (what the slow GPT-2 tokenizer reads) agree too.
        (out / "tokenizer.json").unlink()
        from_vocab = transformers.GPT2Tokenizer.from_pretrained(out)
        assert from_vocab(TEXT)["input_ids"] == ours.encode(TEXT), name
