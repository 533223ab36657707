"""`import hf` without --recipe takes the source architecture's own recipe (each adapter's
``default_recipe``), not gpt2-tiny for everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_gym.data.tokenizer_training import train_bpe_tokenizer
from llm_gym.hf.adapter import hf_components
from llm_gym.hf.files import write_model_dir
from llm_gym.hf.importing import import_hf
from llm_gym.planning.plan import build_on_meta
from llm_gym.recipes.loading import load_recipe
from llm_gym.recipes.resolved import RESOLVED_FILE
from llm_gym_components.models import Llama
from llm_gym_components.models.llama_hf import LlamaHFAdapter
from tests.conftest import run_cli


def test_each_adapters_default_recipe_builds_a_model_of_its_architecture(shared_registry):
    found = {adapter.model_type: adapter for _, adapter in hf_components(shared_registry)}
    assert {"gpt2", "llama"} <= set(found)
    assert found["llama"].default_recipe == "llama-tiny"
    assert found["gpt2"].default_recipe == "gpt2-tiny"
    for adapter in found.values():
        loaded = load_recipe(adapter.default_recipe, registry=shared_registry)
        assert adapter.handles(build_on_meta(shared_registry, loaded.recipe)), adapter


@pytest.fixture(scope="module")
def llama_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Llama as a Hugging Face directory, with a BPE tokenizer.json."""
    root = tmp_path_factory.mktemp("llama-source")
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"the value of item {i} returns its name"}) + "\n")
    tokenizer = train_bpe_tokenizer(root / "corpus.jsonl", 300, root / "tokenizer.json")
    torch.manual_seed(0)
    model = Llama(vocab_size=300, max_seq_len=32, n_embd=32, n_layer=1, n_head=4,
                  multiple_of=8)
    config, tensors = LlamaHFAdapter().to_hf(model, eod_id=0)
    write_model_dir(root / "src", config, tensors)
    (root / "src" / "tokenizer.json").write_bytes(Path(tokenizer).read_bytes())
    return root / "src"


def _base_of(run_dir: Path) -> str:
    return (run_dir / RESOLVED_FILE).read_text().splitlines()[0]


def test_a_llama_source_imports_on_llama_tiny_by_default(llama_source, tmp_path,
                                                         shared_registry):
    result = import_hf(llama_source, tmp_path / "run", overrides=["trainer.seq_len=32"],
                       registry=shared_registry)
    assert result.model_type == "llama"
    assert ", on llama-tiny@1 (" in _base_of(tmp_path / "run")
    # --recipe still wins
    import_hf(llama_source, tmp_path / "other", base="gpt2-debug",
              overrides=["trainer.seq_len=32"], registry=shared_registry)
    assert ", on gpt2-debug@1 (" in _base_of(tmp_path / "other")


def test_the_command_without_recipe_uses_the_architectures_own(llama_source, tmp_path):
    result = run_cli("import", "hf", str(llama_source), "trainer.seq_len=32",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert ", on llama-tiny@1 (" in _base_of(tmp_path / "run")
