"""Llama against transformers' LlamaForCausalLM: exports load there with the same logits
(tied and untied heads, grouped-query attention), directories saved by transformers import
with the same logits, export -> import -> export keeps every weight, and what the other
side cannot express (QK-norm, another architecture, missing or extra tensors, RoPE scaling,
biases) is refused by name.

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

from llm_gym.cli.main import main  # noqa: E402
from llm_gym.data.tokenizer_training import train_bpe_tokenizer  # noqa: E402
from llm_gym.errors import UserError  # noqa: E402
from llm_gym.hf.export import export_hf  # noqa: E402
from llm_gym.hf.files import read_weights, write_json, write_model_dir  # noqa: E402
from llm_gym.hf.importing import import_hf  # noqa: E402
from llm_gym.hf.safetensors import load_file, save_file  # noqa: E402
from llm_gym.runner.loading_model import load_run_model  # noqa: E402
from llm_gym_components.models import Llama  # noqa: E402
from llm_gym_components.models import llama as llama_module  # noqa: E402
from llm_gym_components.models.llama_hf import LlamaHFAdapter, load_llama  # noqa: E402
from tests.hf.conftest import max_diff, random_ids  # noqa: E402

TOLERANCE = 1e-4  # fp32; measured differences are ~2e-7
TEXT = "Return the value of x.  Hello wörld 12345 done\n\n  end \t they'll"
SIZES = dict(vocab_size=67, max_seq_len=16, n_embd=32, n_layer=2, n_head=4, multiple_of=8,
             rope_theta=500.0, norm_eps=1e-5)

# gpt2-debug's machinery with a Llama and a BPE tokenizer (its path filled in per test).
RECIPE = """\
recipe: {description: Llama for the Hugging Face tests}
trainer: {max_steps: 2, seq_len: 32, micro_batch_size: 4, log_every: 1, eval_every: null,
          seed: 0, loggers: []}
model:
  type_hint: Llama
  config: {vocab_size: 320, max_seq_len: 32, n_embd: 32, n_layer: 2, n_head: 4,
           n_kv_head: 2, multiple_of: 16, tie_embeddings: TIED, qk_norm: QK_NORM}
tokenizer:
  type_hint: HFJson
  config: {path: TOKENIZER}
train_dataset:
  type_hint: DemoCorpus
  config: {split: train, val_fraction: 0.1, corpus_mb: 0.5}
loss: {type_hint: CrossEntropy}
optimizer: {type_hint: AdamW, config: {lr: 1.0e-3}}
scheduler: {type_hint: Constant, config: {warmup_steps: 1}}
"""


def small_llama(seed: int = 0, **overrides: object) -> Llama:
    """A Llama with every weight random (norms too), so no mapping error hides."""
    torch.manual_seed(seed)
    model = Llama(**{**SIZES, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def hf_llama(directory: Path):
    return transformers.LlamaForCausalLM.from_pretrained(directory).eval()


@pytest.fixture(scope="module")
def bpe_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer.json, trained as `tools tokenizer train` would."""
    root = tmp_path_factory.mktemp("llama-bpe")
    words = "the value of a function returns an object with its name and type".split()
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(300):
            text = " ".join(words[(i * k) % len(words)] for k in range(1, 12))
            f.write(json.dumps({"text": f"{text}. Return {i}!"}) + "\n")
    return train_bpe_tokenizer(root / "corpus.jsonl", 300, root / "tokenizer.json")


def llama_recipe(directory: Path, bpe_json: Path, *, tied: bool, qk_norm: bool = False) -> Path:
    path = directory / f"llama-{'tied' if tied else 'untied'}-{qk_norm}.yaml"
    path.write_text(RECIPE.replace("TIED", str(tied).lower())
                    .replace("QK_NORM", str(qk_norm).lower())
                    .replace("TOKENIZER", str(bpe_json)))
    return path


def train(recipe: Path, run_dir: Path, demo_cache: Path) -> Path:
    from llm_gym.runner.entry import run_recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
        run_recipe(str(recipe), [], run_dir=run_dir, allow_drift=True)
    return run_dir


@pytest.fixture(scope="module")
def llama_runs(tmp_path_factory: pytest.TempPathFactory, bpe_json: Path,
               demo_cache: Path) -> dict[bool, Path]:
    """A tied and an untied Llama trained for 2 steps with the BPE tokenizer."""
    root = tmp_path_factory.mktemp("llama-runs")
    return {tied: train(llama_recipe(root, bpe_json, tied=tied), root / f"run-{tied}",
                        demo_cache) for tied in (True, False)}


@pytest.mark.parametrize(("tied", "n_kv_head"), [(True, 4), (False, 4), (True, 2),
                                                 (False, 1)])
def test_exported_llama_has_the_same_logits_in_transformers(
    tmp_path: Path, tied: bool, n_kv_head: int
) -> None:
    model = small_llama(tie_embeddings=tied, n_kv_head=n_kv_head)
    config, tensors = LlamaHFAdapter().to_hf(model, eod_id=0)
    write_model_dir(tmp_path, config, tensors)
    hf = hf_llama(tmp_path)
    assert hf.config.num_key_value_heads == n_kv_head
    assert hf.config.tie_word_embeddings is tied
    ids = random_ids(vocab_size=SIZES["vocab_size"])
    with torch.no_grad():
        assert max_diff(hf(ids).logits, model(ids)) < TOLERANCE


@pytest.mark.parametrize("tied", [True, False])
def test_exported_llama_run_loads_in_transformers_with_its_tokenizer(
    llama_runs: dict[bool, Path], tmp_path: Path, tied: bool
) -> None:
    export_hf(llama_runs[tied], tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    run = load_run_model(llama_runs[tied])
    eod = run.tokenizer.eod_id
    assert {k: config[k] for k in (
        "architectures", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "num_hidden_layers", "rope_theta", "rms_norm_eps",
        "tie_word_embeddings", "max_position_embeddings", "vocab_size", "bos_token_id",
        "eos_token_id", "torch_dtype")} == {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 96,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": tied,
        "max_position_embeddings": 32, "vocab_size": 320, "bos_token_id": eod,
        "eos_token_id": eod, "torch_dtype": "float32"}
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert ("lm_head.weight" in weights) is not tied
    ids = random_ids(vocab_size=320, seq=32)
    with torch.no_grad():
        assert max_diff(hf_llama(tmp_path / "out")(ids).logits, run.model(ids)) < TOLERANCE
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer(TEXT)["input_ids"] == run.tokenizer.encode(TEXT)
    assert tokenizer.eos_token_id == eod and tokenizer.model_max_length == 32


@pytest.mark.parametrize(("tied", "n_kv_head"), [(True, 2), (False, 1), (False, 4)])
def test_llama_saved_by_transformers_imports_with_the_same_logits(
    bpe_json: Path, tmp_path: Path, tied: bool, n_kv_head: int
) -> None:
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_json),
                                                   eos_token="<|endoftext|>")
    config = transformers.LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=48, intermediate_size=100, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=n_kv_head, max_position_embeddings=32,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 2000.0},
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    source = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norms too, so a mapping slip cannot hide
        for p in source.parameters():
            p.normal_(0.0, 0.2)
    source.save_pretrained(tmp_path / "src")
    hf_tok.save_pretrained(tmp_path / "src")

    result = import_hf(tmp_path / "src", tmp_path / "run", base="gpt2-debug")
    run = load_run_model(tmp_path / "run")
    assert result.model_type == "llama" and isinstance(run.model, Llama)
    assert run.recipe.model.type_hint.name == "LlamaPretrained"
    assert run.model.tie_embeddings is tied and run.model.n_kv_head == n_kv_head
    ids = random_ids(vocab_size=len(hf_tok), seq=32)
    with torch.no_grad():
        expected = source(ids).logits
        assert max_diff(expected, run.model(ids)) < TOLERANCE
        # Read once, not through the import's rewrite (two opposite slips would cancel).
        assert max_diff(expected, load_llama(tmp_path / "src")(ids)) < TOLERANCE
    assert run.tokenizer.eod_id == 0 and run.tokenizer.encode(TEXT) == hf_tok(TEXT)["input_ids"]


@pytest.mark.parametrize("tied", [True, False])
def test_export_import_export_keeps_every_weight(
    llama_runs: dict[bool, Path], tmp_path: Path, tied: bool
) -> None:
    first = export_hf(llama_runs[tied], tmp_path / "first").out_dir
    imported = import_hf(first, tmp_path / "run", base="gpt2-debug").run_dir
    second = export_hf(imported, tmp_path / "second").out_dir
    # The import's own copy (read, converted, written once) and the second export.
    for other in (imported / "hf", second):
        a, b = load_file(first / "model.safetensors"), load_file(other / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), other
        assert (first / "model.safetensors").read_bytes() == (
            other / "model.safetensors").read_bytes()
    assert json.loads((first / "config.json").read_text()) == json.loads(
        (second / "config.json").read_text())


def test_qk_norm_is_refused_naming_the_setting(
    tmp_path: Path, bpe_json: Path, demo_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UserError, match="model.config.qk_norm=true: transformers' "
                       "LlamaForCausalLM has no QK-norm"):
        LlamaHFAdapter().to_hf(small_llama(qk_norm=True), eod_id=0)
    run = train(llama_recipe(tmp_path, bpe_json, tied=True, qk_norm=True), tmp_path / "run",
                demo_cache)
    with pytest.raises(SystemExit) as info:
        main(["export", "hf", str(run), str(tmp_path / "out")])
    output = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "Traceback" not in output
    assert "model.config.qk_norm=true" in output, output
    assert not (tmp_path / "out").exists()


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    """An untied Llama with grouped-query attention as transformers would find it."""
    config, tensors = LlamaHFAdapter().to_hf(small_llama(n_kv_head=2), eod_id=0)
    write_model_dir(tmp_path / "llama", config, tensors)
    return tmp_path / "llama"


def _rewrite(directory: Path, *, config: dict | None = None,
             drop: tuple[str, ...] = (), add: dict | None = None) -> None:
    if config is not None:
        old = json.loads((directory / "config.json").read_text())
        write_json(directory / "config.json", {**old, **config})
    tensors = {k: v for k, v in read_weights(directory).items() if k not in drop}
    save_file({**tensors, **(add or {})}, directory / "model.safetensors")


def test_missing_and_extra_tensors_are_refused_naming_each(exported: Path) -> None:
    _rewrite(exported, drop=("model.layers.1.mlp.up_proj.weight", "lm_head.weight"),
             add={"model.layers.0.self_attn.q_norm.weight": torch.ones(8),
                  "model.layers.0.self_attn.q_proj.bias": torch.zeros(32)})
    with pytest.raises(UserError) as info:
        load_llama(exported)
    message = str(info.value)
    assert message.startswith(f"{exported}: the weights do not fit a LlamaForCausalLM")
    for fragment in ("missing model.layers.1.mlp.up_proj.weight", "missing lm_head.weight",
                     "unexpected model.layers.0.self_attn.q_norm.weight",
                     "unexpected model.layers.0.self_attn.q_proj.bias"):
        assert fragment in message, message


def test_a_wrong_shape_is_refused_naming_the_tensor(exported: Path) -> None:
    # num_key_value_heads=4 in the config, k_proj of 2 heads in the weights.
    _rewrite(exported, config={"num_key_value_heads": 4})
    with pytest.raises(UserError) as info:
        load_llama(exported)
    assert "model.layers.0.self_attn.k_proj.weight: shape (16, 32), expected (32, 32)" in str(
        info.value)


def test_a_differing_head_with_tied_embeddings_is_refused(exported: Path) -> None:
    _rewrite(exported, config={"tie_word_embeddings": True})
    with pytest.raises(UserError, match="tie_word_embeddings is true but lm_head.weight "
                       "differs from model.embed_tokens.weight"):
        load_llama(exported)


def test_another_architecture_is_refused(exported: Path, tmp_path: Path) -> None:
    from llm_gym_components.models.gpt2_hf import GPT2HFAdapter, load_gpt2
    from tests.hf.conftest import small_gpt2

    config, tensors = GPT2HFAdapter().to_hf(small_gpt2(), eod_id=0)
    write_model_dir(tmp_path / "gpt2", config, tensors)
    with pytest.raises(UserError, match="model_type is 'gpt2', not 'llama'"):
        load_llama(tmp_path / "gpt2")
    with pytest.raises(UserError, match="model_type is 'llama', not 'gpt2'"):
        load_gpt2(exported)
    _rewrite(exported, config={"model_type": "mistral"})
    with pytest.raises(UserError, match=r"model_type 'mistral' \(supported: gpt2, llama\)"):
        import_hf(exported, tmp_path / "run", base="gpt2-debug")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("change", "fragment"), [
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}},
     "rope_parameters: rope_type 'llama3': only unscaled RoPE"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}},
     "rope_scaling: rope_type 'linear'"),
    ({"attention_bias": True}, "attention_bias=True: llm_gym's Llama has no biases"),
    ({"mlp_bias": True}, "mlp_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu': only 'silu'"),
    ({"head_dim": 16}, "head_dim=16: only hidden_size / num_attention_heads (8)"),
    ({"num_key_value_heads": 3}, "num_attention_heads (4) must be divisible by "
     "num_key_value_heads (3)"),
    ({"num_attention_heads": 32}, "head dimension hidden_size / num_attention_heads = 1 is odd"),
    ({"attention_dropout": 0.1}, "attention_dropout=0.1"),
    ({"rms_norm_eps": "1e-5"}, "rms_norm_eps='1e-5'"),
    ({"hidden_size": 1.5}, "hidden_size must be a positive integer, got 1.5"),
])
def test_configs_llama_cannot_reproduce_are_refused_by_name(
    exported: Path, change: dict, fragment: str
) -> None:
    _rewrite(exported, config=change)
    with pytest.raises(UserError) as info:
        load_llama(exported)
    assert str(info.value).startswith(f"{exported}: this model cannot be loaded as llm_gym's "
                                      "Llama"), str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("change", [{"hidden_size": 10**6, "num_attention_heads": 2,
                                     "head_dim": 500_000},
                                    {"num_hidden_layers": 10**5},
                                    {"intermediate_size": 10**9}])
def test_crafted_sizes_fail_from_the_header_without_building_the_model(
    exported: Path, monkeypatch: pytest.MonkeyPatch, change: dict
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before its sizes were checked")

    monkeypatch.setattr(llama_module.Llama, "__init__", never)
    _rewrite(exported, config=change)
    with pytest.raises(UserError, match="do not fit a LlamaForCausalLM"):
        load_llama(exported)
