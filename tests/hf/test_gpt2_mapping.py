"""GPT-2 <-> Hugging Face layout, without transformers: names, transposes, the checks on
config.json and the weights, and the ways a checkpoint can be stored."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.hf.files import read_weights, write_json, write_model_dir
from llm_gym.hf.safetensors import save_file
from llm_gym_components.models.gpt2_hf import GPT2HFAdapter, load_gpt2
from tests.hf.conftest import SIZES, max_diff, random_ids, small_gpt2

ADAPTER = GPT2HFAdapter()


def exported(tmp_path: Path, model=None, **overrides: object) -> Path:
    model = model if model is not None else small_gpt2(**overrides)
    config, tensors = ADAPTER.to_hf(model, eod_id=0)
    write_model_dir(tmp_path / "hf", config, tensors)
    return tmp_path / "hf"


def test_names_and_layout_are_hugging_faces() -> None:
    model = small_gpt2()
    config, tensors = ADAPTER.to_hf(model, eod_id=5)
    assert "lm_head.weight" not in tensors  # tied, as transformers saves it
    assert len(tensors) == 4 + 12 * SIZES["n_layer"]
    n = SIZES["n_embd"]
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (n, 3 * n)  # Conv1D (in, out)
    assert tensors["transformer.h.1.mlp.c_fc.weight"].shape == (n, 4 * n)
    assert tensors["transformer.h.1.mlp.c_proj.weight"].shape == (4 * n, n)
    torch.testing.assert_close(tensors["transformer.h.0.attn.c_attn.weight"],
                               model.transformer.h[0].attn.c_attn.weight.t())
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == 5
    assert {k: config[k] for k in SIZES} == SIZES


@pytest.mark.parametrize("bias", [True, False])
def test_export_then_load_gives_the_same_logits(tmp_path: Path, bias: bool) -> None:
    model = small_gpt2(bias=bias)
    loaded = load_gpt2(exported(tmp_path, model))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(loaded(ids), model(ids)) == 0.0


def test_pytorch_model_bin_without_prefix_and_with_mask_buffers(tmp_path: Path) -> None:
    """How the original "gpt2" is stored: a pickle saved from GPT2Model (no
    "transformer." prefix) that still carries the causal-mask buffers."""
    model = small_gpt2()
    config, tensors = ADAPTER.to_hf(model, eod_id=0)
    state = {k.removeprefix("transformer."): v.clone() for k, v in tensors.items()}
    state["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "hf").mkdir()
    torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
    write_json(tmp_path / "hf" / "config.json", config)
    with torch.no_grad():
        assert max_diff(load_gpt2(tmp_path / "hf")(random_ids()), model(random_ids())) == 0.0


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_with_code_is_refused(tmp_path: Path, capsys) -> None:
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Payload()}, f, protocol=2)
    with pytest.raises(UserError, match="cannot be loaded as plain tensors"):
        read_weights(tmp_path)
    assert "code ran" not in capsys.readouterr().out


def test_sharded_safetensors(tmp_path: Path) -> None:
    model = small_gpt2()
    config, tensors = ADAPTER.to_hf(model, eod_id=0)
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    write_json(tmp_path / "model.safetensors.index.json", {"weight_map": weight_map})
    write_json(tmp_path / "config.json", config)
    with torch.no_grad():
        assert max_diff(load_gpt2(tmp_path)(random_ids()), model(random_ids())) == 0.0
    write_json(tmp_path / "model.safetensors.index.json", {"weight_map": {"x": "../a"}})
    with pytest.raises(UserError, match="plain file name"):
        read_weights(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_type": "llama"}, "model_type"),
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_inner": 100}, "n_inner"),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"n_head": 5}, "divisible"),
        ({"n_layer": "2"}, "positive integer"),
    ],
)
def test_configs_gpt2_cannot_reproduce_are_refused(tmp_path: Path, change: dict,
                                                   match: str) -> None:
    directory = exported(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    write_json(directory / "config.json", {**config, **change})
    with pytest.raises(UserError) as info:
        load_gpt2(directory)
    assert match in str(info.value)


def test_weights_that_do_not_fit_are_listed(tmp_path: Path) -> None:
    directory = exported(tmp_path)
    _, tensors = ADAPTER.to_hf(small_gpt2(), eod_id=0)
    del tensors["transformer.h.1.ln_2.bias"]
    tensors["score.weight"] = torch.zeros(2, 32)
    tensors["transformer.wpe.weight"] = torch.zeros(8, 32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(UserError) as info:
        load_gpt2(directory)
    text = str(info.value)
    assert "missing transformer.h.1.ln_2.bias" in text and "unexpected score.weight" in text
    assert "transformer.wpe.weight: shape (8, 32), expected (16, 32)" in text


def test_an_untied_head_is_refused(tmp_path: Path) -> None:
    directory = exported(tmp_path)
    _, tensors = ADAPTER.to_hf(small_gpt2(), eod_id=0)
    tensors["lm_head.weight"] = torch.zeros(SIZES["vocab_size"], SIZES["n_embd"])
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(UserError, match="untied head"):
        load_gpt2(directory)


def test_missing_files_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config.json"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "tf_model.h5").write_text("")
    with pytest.raises(UserError, match="no weights found.*tf_model.h5"):
        load_gpt2(tmp_path)
