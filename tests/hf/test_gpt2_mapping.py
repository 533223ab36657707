"""GPT-2 <-> Hugging Face layout, without transformers: names, transposes, the checks on
config.json and the weights, and the ways a checkpoint can be stored."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from llm_gym.errors import UserError
from llm_gym.hf.files import read_weight_infos, read_weights, write_json, write_model_dir
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


# config.json sizes that the (small) weights do not back; each must fail from the headers
# alone, naming a tensor, without building the model it describes.
CRAFTED = [
    ({"n_embd": 10**6, "n_head": 1}, ["n_embd=1000000", "transformer.wte.weight: shape (67, 32), "
                                      "expected (67, 1000000)"]),
    ({"n_layer": 10**5}, ["missing transformer.h.2.ln_1.weight", "1199976 tensors missing",
                          "n_layer=100000"]),
    ({"vocab_size": 10**12}, ["transformer.wte.weight: shape (67, 32), expected "
                              "(1000000000000, 32)"]),
    ({"n_positions": 2**62}, ["transformer.wpe.weight: shape (16, 32)"]),
    ({"n_layer": 3}, ["missing transformer.h.2.ln_1.weight", "12 tensors missing in all"]),
    ({"n_layer": 1}, ["unexpected transformer.h.1.ln_1.weight"]),
]


@pytest.mark.parametrize(("change", "fragments"), CRAFTED,
                         ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(CRAFTED)])
def test_config_sizes_are_checked_against_the_headers_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, fragments: list[str]
) -> None:
    import time

    import llm_gym_components.models.gpt2_hf as gpt2_hf

    directory = exported(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    write_json(directory / "config.json", {**config, **change})

    def no_model(**sizes: object) -> None:
        raise AssertionError(f"a GPT2 of {sizes} was built before the weights were checked")

    monkeypatch.setattr(gpt2_hf, "GPT2", no_model)
    monkeypatch.setattr(gpt2_hf, "read_weights", lambda d: pytest.fail("data read first"))
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_gpt2(directory)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"{elapsed:.2f} s"
    text = str(info.value)
    assert text.startswith(f"{directory}: the weights do not fit"), text
    for fragment in fragments:
        assert fragment in text, text


def test_tensors_of_the_wrong_kind_or_twice_are_named(tmp_path: Path) -> None:
    directory = exported(tmp_path)
    _, tensors = ADAPTER.to_hf(small_gpt2(), eod_id=0)
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["transformer.ln_f.bias"] = torch.zeros(32, dtype=torch.int32)
    tensors["h.0.ln_1.weight"] = torch.ones(32)  # the same tensor without the prefix
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(UserError) as info:
        load_gpt2(directory)
    text = str(info.value)
    assert "transformer.ln_f.bias: dtype torch.int32" in text
    assert "stored twice" in text and "h.0.ln_1.weight" in text


def test_a_tensor_in_two_shards_is_refused(tmp_path: Path) -> None:
    _, tensors = ADAPTER.to_hf(small_gpt2(), eod_id=0)
    save_file({"transformer.wte.weight": tensors["transformer.wte.weight"]}, tmp_path / "a")
    save_file({"transformer.wte.weight": tensors["transformer.wte.weight"]}, tmp_path / "b")
    write_json(tmp_path / "model.safetensors.index.json",
               {"weight_map": {"transformer.wte.weight": "a", "x": "b"}})
    with pytest.raises(UserError, match="'transformer.wte.weight' is also in .*a"):
        read_weight_infos(tmp_path)
