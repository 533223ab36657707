"""Llama <-> Hugging Face ``LlamaForCausalLM``: the config and weight mapping, and the
``LlamaPretrained`` model component that starts a recipe from a Hugging Face directory.

The core finds this through the registry (``LlamaPretrainedConfig.hf_adapter``, see
``llm_gym.hf.adapter``). The mapping is one to one: ``llama.py`` names its parameters as
``LlamaForCausalLM`` does (``model.layers.N.self_attn.q_proj.weight`` ...) in the same
``nn.Linear`` ``(out, in)`` layout, and its RoPE is Hugging Face's convention, not the
original Llama's interleaved one: pair i of a head is (i, i + head_dim / 2), rotated by
``rotate_half``, with the frequencies repeated over both halves. So q and k projection rows
are written as they are; a checkpoint converted from Meta's format has had its rows
permuted to this convention by transformers' converter already.

What transformers cannot express exactly is refused by name, in both directions: QK-norm
(LlamaForCausalLM has none), RoPE scaling, biases, another activation than SiLU, a head
dimension other than hidden_size / num_attention_heads, attention dropout.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from llm_gym.errors import UserError
from llm_gym.hf.files import WeightInfo, read_config, read_weight_infos, read_weights
from llm_gym.hf.tokenizer_files import tokenizer_entry
from llm_gym.registry import ComponentConfig, component

from .llama import Llama, RMSNorm, swiglu_hidden_size

# What transformers' LlamaConfig assumes when config.json leaves a value out.
_DEFAULTS: dict[str, Any] = {"vocab_size": 32000, "hidden_size": 4096,
                             "intermediate_size": 11008, "num_hidden_layers": 32,
                             "num_attention_heads": 32, "max_position_embeddings": 2048}
_DEFAULT_EPS = 1e-6
_DEFAULT_THETA = 10000.0
# Saved by older transformers releases beside the weights; recomputed from the sizes here.
_BUFFERS = (".rotary_emb.inv_freq",)
_BLOCK_NAME = re.compile(r"model\.layers\.(0|[1-9][0-9]*)\.(.+)")


class LlamaHFAdapter:
    """The ``llm_gym.hf.adapter.HFAdapter`` of the built-in Llama."""

    model_type = "llama"
    default_recipe = "llama-tiny"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, Llama)

    def to_hf(
        self, model: nn.Module, *, eod_id: int | None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        assert isinstance(model, Llama)
        if model.qk_norm:
            raise UserError(
                "model.config.qk_norm=true: transformers' LlamaForCausalLM has no QK-norm, so "
                "it would compute different logits from these weights; only a Llama trained "
                "with qk_norm=false exports to the Hugging Face format")
        tensors = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        if model.tie_embeddings:
            # transformers ties the head itself and saves the shared weight once.
            del tensors["lm_head.weight"]
        head_dim = model.n_embd // model.n_head
        theta = float(model.rope_theta)
        config = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": model.vocab_size,
            "hidden_size": model.n_embd,
            "intermediate_size": model.hidden,
            "num_hidden_layers": model.n_layer,
            "num_attention_heads": model.n_head,
            "num_key_value_heads": model.n_kv_head,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": model.max_seq_len,
            "initializer_range": model.init_std,
            "rms_norm_eps": _norm_eps(model),
            # rope_theta for transformers 4.x, rope_parameters for 5.x; the same value.
            "rope_theta": theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "tie_word_embeddings": model.tie_embeddings,
            "use_cache": True,
            # transformers defaults these to 1 and 2, which need not be this vocabulary's.
            "bos_token_id": eod_id,
            "eos_token_id": eod_id,
            "torch_dtype": "float32",
        }
        return config, tensors

    def tokenizer_entry(
        self, directory: Path, config: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return tokenizer_entry(directory, config)


def _norm_eps(model: Llama) -> float:
    eps = {float(m.eps) for m in model.modules() if isinstance(m, RMSNorm)}
    assert len(eps) == 1, eps  # llama.py gives every RMSNorm the one norm_eps
    return eps.pop()


def load_llama(directory: Path) -> Llama:
    """A Llama with the sizes and weights of a Hugging Face Llama directory."""
    directory = Path(directory)
    kwargs = llama_kwargs(read_config(directory), directory)
    # config.json's sizes are only believed once the weights' headers agree: a crafted
    # hidden_size or num_hidden_layers would otherwise allocate whatever it says.
    check_weights_fit(read_weight_infos(directory), kwargs, directory)
    tensors = read_weights(directory)  # bounded by the files' sizes, which now fit
    model = Llama(**kwargs)
    if any(p.is_meta for p in model.parameters()):
        raise UserError("LlamaPretrained cannot be built on the meta device (it loads weights)")
    model.load_state_dict(_from_hf(tensors, tied=kwargs["tie_embeddings"], source=directory))
    return model


def llama_kwargs(config: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """``Llama``'s constructor arguments from a config.json; refuses, naming each setting,
    what llm_gym's Llama cannot reproduce exactly."""
    problems = []
    if config.get("model_type") != "llama":
        problems.append(f"model_type is {config.get('model_type')!r}, not 'llama'")
    sizes = {key: config.get(key, default) for key, default in _DEFAULTS.items()}
    sizes["num_key_value_heads"] = config.get("num_key_value_heads",
                                              sizes["num_attention_heads"])
    for key, value in sizes.items():
        if type(value) is not int or value < 1:
            problems.append(f"{key} must be a positive integer, got {value!r}")
    if problems:  # the checks below divide by these
        raise UserError(f"{source}: this model cannot be loaded as llm_gym's Llama", problems)
    embd, heads, kv_heads = (sizes["hidden_size"], sizes["num_attention_heads"],
                             sizes["num_key_value_heads"])
    if embd % heads:
        problems.append(f"hidden_size ({embd}) must be divisible by num_attention_heads "
                        f"({heads})")
    elif (embd // heads) % 2:
        problems.append(f"the head dimension hidden_size / num_attention_heads = "
                        f"{embd // heads} is odd; RoPE rotates pairs")
    if heads % kv_heads:
        problems.append(f"num_attention_heads ({heads}) must be divisible by "
                        f"num_key_value_heads ({kv_heads})")
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != embd // heads:
        problems.append(f"head_dim={head_dim!r}: only hidden_size / num_attention_heads "
                        f"({embd // heads}) is supported")
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={config['hidden_act']!r}: only 'silu' (SwiGLU) is "
                        "supported")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key, False) is not False:
            problems.append(f"{key}={config[key]!r}: llm_gym's Llama has no biases")
    dropout = config.get("attention_dropout", 0.0)
    if dropout != 0:
        problems.append(f"attention_dropout={dropout!r}: llm_gym's Llama has no dropout")
    eps = config.get("rms_norm_eps", _DEFAULT_EPS)
    if not _positive_number(eps):
        problems.append(f"rms_norm_eps={eps!r}: must be a positive number")
    theta = _rope_theta(config, problems)
    tied = config.get("tie_word_embeddings", False)
    if type(tied) is not bool:
        problems.append(f"tie_word_embeddings={tied!r}: must be true or false")
    init_std = config.get("initializer_range", 0.02)
    if not _positive_number(init_std):
        init_std = 0.02  # only initialises new weights; the loaded ones replace them
    if problems:
        raise UserError(f"{source}: this model cannot be loaded as llm_gym's Llama", problems)
    return {
        "vocab_size": sizes["vocab_size"],
        "max_seq_len": sizes["max_position_embeddings"],
        "n_embd": embd,
        "n_layer": sizes["num_hidden_layers"],
        "n_head": heads,
        "n_kv_head": kv_heads,
        **_ffn_arguments(embd, sizes["intermediate_size"]),
        "rope_theta": theta,
        "norm_eps": float(eps),
        "qk_norm": False,
        "tie_embeddings": tied,
        "init_std": float(init_std),
    }


def _positive_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _rope_theta(config: Mapping[str, Any], problems: list[str]) -> float:
    """The RoPE base of config.json (transformers 5's ``rope_parameters`` or 4's
    ``rope_theta`` and ``rope_scaling``); a scaled RoPE is a problem."""
    theta = config.get("rope_theta", _DEFAULT_THETA)
    for key in ("rope_parameters", "rope_scaling"):
        params = config.get(key)
        if params is None:
            continue
        if not isinstance(params, dict):
            problems.append(f"{key}={params!r}: expected an object")
            continue
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            problems.append(f"{key}: rope_type {kind!r}: only unscaled RoPE ('default') is "
                            "supported")
        theta = params.get("rope_theta", theta)
    if not _positive_number(theta):
        problems.append(f"rope_theta={theta!r}: must be a positive number")
        return _DEFAULT_THETA
    return float(theta)


def _ffn_arguments(n_embd: int, intermediate: int) -> dict[str, Any]:
    """``ffn_multiplier`` and ``multiple_of`` for which ``swiglu_hidden_size`` gives
    ``intermediate``: rounding up to a multiple of ``intermediate`` itself."""
    base = int(2 * 4 * n_embd / 3)
    multiplier = intermediate / base
    # multiplier * base is intermediate or, rounded down, one less: either rounds up to it.
    for candidate in (multiplier, math.nextafter(multiplier, math.inf)):
        if swiglu_hidden_size(n_embd, candidate, intermediate) == intermediate:
            return {"ffn_multiplier": candidate, "multiple_of": intermediate}
    raise AssertionError(f"no multiplier gives intermediate_size {intermediate}")


def hf_shapes(kwargs: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]],
                                                  dict[str, tuple[int, ...]]]:
    """The shapes Hugging Face stores for a Llama of ``kwargs``: the model-wide tensors
    and those of every block (names after ``model.layers.N.``)."""
    v, e = kwargs["vocab_size"], kwargs["n_embd"]
    d = e // kwargs["n_head"]
    q, kv = kwargs["n_head"] * d, kwargs["n_kv_head"] * d
    hidden = swiglu_hidden_size(e, kwargs["ffn_multiplier"], kwargs["multiple_of"])
    top = {"model.embed_tokens.weight": (v, e), "model.norm.weight": (e,),
           "lm_head.weight": (v, e)}
    block = {
        "input_layernorm.weight": (e,),
        "self_attn.q_proj.weight": (q, e), "self_attn.k_proj.weight": (kv, e),
        "self_attn.v_proj.weight": (kv, e), "self_attn.o_proj.weight": (e, q),
        "post_attention_layernorm.weight": (e,),
        "mlp.gate_proj.weight": (hidden, e), "mlp.up_proj.weight": (hidden, e),
        "mlp.down_proj.weight": (e, hidden),
    }
    return top, block


def check_weights_fit(
    infos: Mapping[str, WeightInfo], kwargs: Mapping[str, Any], source: Path
) -> None:
    """Every tensor config.json implies is in the weights with its shape and a float dtype,
    and nothing else is (a tied head may be saved or not); ``UserError`` naming each
    mismatch otherwise. Walks the file's tensors, never the config's layers, so a
    config.json claiming 10**5 layers or hidden_size=10**6 fails at once."""
    top, block = hf_shapes(kwargs)
    n_layer, tied = kwargs["n_layer"], kwargs["tie_embeddings"]
    problems, found = [], set()
    for name, info in sorted(infos.items(), key=lambda item: _report_order(item[0])):
        key = _canonical(name)
        if key.endswith(_BUFFERS):
            continue
        if (match := _BLOCK_NAME.fullmatch(key)) is not None:
            want = block.get(match[2]) if int(match[1]) < n_layer else None
        else:
            want = top.get(key)
        if want is None:
            problems.append(f"unexpected {name}")
            continue
        if key in found:
            problems.append(f"{name}: stored twice (with and without the model. prefix)")
        elif info.shape != want:
            problems.append(f"{name}: shape {info.shape}, expected {want}")
        elif not info.dtype.is_floating_point:
            problems.append(f"{name}: dtype {info.dtype}, expected a floating-point type")
        found.add(key)
    expected = _expected_names(top, block, n_layer, tied)
    missing = (k for k in expected if k not in found)
    problems += [f"missing {k}" for k in itertools.islice(missing, 8)]
    missing_count = (len(top) - tied + len(block) * n_layer
                     - len(found - ({"lm_head.weight"} if tied else set())))
    if missing_count > 8:
        problems.append(f"... {missing_count} tensors missing in all (config.json says "
                        f"num_hidden_layers={n_layer})")
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"]
                                 if len(problems) > 12 else [])
        sizes = ", ".join(f"{k}={kwargs[k]}" for k in (
            "vocab_size", "n_embd", "n_layer", "n_head", "n_kv_head", "tie_embeddings"))
        raise UserError(f"{source}: the weights do not fit a LlamaForCausalLM of its "
                        f"config.json ({sizes})", shown)


def _canonical(name: str) -> str:
    # Checkpoints saved from LlamaModel (without the head) lack the model. prefix.
    return name if name.startswith(("model.", "lm_head.")) else f"model.{name}"


def _report_order(name: str) -> tuple[int, str]:
    match = _BLOCK_NAME.fullmatch(_canonical(name))
    return (-1, name) if match is None else (int(match[1]), match[2])


def _expected_names(top: Mapping[str, Any], block: Mapping[str, Any], n_layer: int,
                    tied: bool) -> Iterator[str]:
    yield from (k for k in top if not (tied and k == "lm_head.weight"))
    for i in range(n_layer):  # lazily: the caller stops after the first few missing
        yield from (f"model.layers.{i}.{k}" for k in block)


def _from_hf(tensors: Mapping[str, torch.Tensor], *, tied: bool,
             source: Path) -> dict[str, torch.Tensor]:
    """Hugging Face tensors as our state_dict (``check_weights_fit`` checked every name
    and shape; the layout is the same)."""
    named = {_canonical(n): t for n, t in tensors.items() if not n.endswith(_BUFFERS)}
    if tied:
        head = named.get("lm_head.weight")
        if head is not None and not torch.equal(head, named["model.embed_tokens.weight"]):
            raise UserError(f"{source}: tie_word_embeddings is true but lm_head.weight "
                            "differs from model.embed_tokens.weight; transformers would "
                            "use the embedding as the head, so which one is meant is unclear")
        named["lm_head.weight"] = named["model.embed_tokens.weight"]
    return named


@component("model", "LlamaPretrained", version=1)
class LlamaPretrainedConfig(ComponentConfig):
    """Llama with sizes and weights from a Hugging Face LlamaForCausalLM directory (see
    `import hf`)."""

    hf_adapter: ClassVar[LlamaHFAdapter] = LlamaHFAdapter()
    # Built with trained weights: a run directory without checkpoints is still usable.
    loads_weights: ClassVar[bool] = True

    path: Path = Field(description="directory with config.json and model.safetensors "
                       "(or pytorch_model.bin, read with weights_only)")

    def build(self) -> Llama:
        return load_llama(self.path)
