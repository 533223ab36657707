"""GPT-2 <-> Hugging Face ``GPT2LMHeadModel``: the name and layout mapping, and the
``GPT2Pretrained`` model component that starts a recipe from a Hugging Face directory.

The core finds this through the registry (``GPT2PretrainedConfig.hf_adapter``, see
``llm_gym.hf.adapter``), so it never imports the built-in set. Names are identical on
both sides; Hugging Face stores ``c_attn``/``c_proj``/``c_fc`` as ``Conv1D`` weights
``(in, out)``, the transpose of our ``nn.Linear``. A model built with ``bias=False``
exports zero biases, which is exact: Hugging Face's GPT-2 always has biases.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from llm_gym.errors import UserError
from llm_gym.hf.files import WeightInfo, read_config, read_weight_infos, read_weights
from llm_gym.hf.tokenizer_files import tokenizer_entry
from llm_gym.registry import ComponentConfig, component

from .gpt2 import GPT2

# Conv1D in Hugging Face, nn.Linear here: stored transposed.
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older transformers releases saved with the weights.
_BUFFERS = (".attn.bias", ".attn.masked_bias")
# What transformers assumes when config.json leaves a size out (GPT2Config's defaults).
_DEFAULT_SIZES = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
                  "n_head": 12}
# Both are the tanh approximation our MLP uses.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


class GPT2HFAdapter:
    """The ``llm_gym.hf.adapter.HFAdapter`` of the built-in GPT-2."""

    model_type = "gpt2"
    default_recipe = "gpt2-tiny"

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, GPT2)

    def to_hf(
        self, model: nn.Module, *, eod_id: int | None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        assert isinstance(model, GPT2)
        t = model.transformer
        if model.lm_head.weight is not t.wte.weight and not torch.equal(
            model.lm_head.weight, t.wte.weight
        ):
            raise ValueError("the LM head is not tied to the token embedding")
        tensors = {"transformer.wte.weight": t.wte.weight, "transformer.wpe.weight": t.wpe.weight}
        _add(tensors, "transformer.ln_f", t.ln_f)
        for i, block in enumerate(t.h):
            for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
                _add(tensors, f"transformer.h.{i}.{name}", block.get_submodule(name))
        dropout = t.drop.p
        config = {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": model.vocab_size,
            "n_positions": model.n_positions,
            "n_embd": model.n_embd,
            "n_layer": model.n_layer,
            "n_head": model.n_head,
            "n_inner": None,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": dropout,
            "embd_pdrop": dropout,
            "attn_pdrop": dropout,
            "initializer_range": 0.02,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "tie_word_embeddings": True,
            "use_cache": True,
            # transformers defaults these to 50256, outside a smaller vocabulary.
            "bos_token_id": eod_id,
            "eos_token_id": eod_id,
            "torch_dtype": "float32",
        }
        return config, tensors

    def tokenizer_entry(
        self, directory: Path, config: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return tokenizer_entry(directory, config)


def load_gpt2(directory: Path, *, dropout: float = 0.0) -> GPT2:
    """A GPT2 with the sizes and weights of a Hugging Face GPT-2 directory."""
    directory = Path(directory)
    sizes = gpt2_sizes(read_config(directory), directory)
    # config.json's sizes are only believed once the weights' headers agree: a crafted
    # n_embd or n_layer would otherwise allocate (or loop over) whatever it says.
    check_weights_fit(read_weight_infos(directory), sizes, directory)
    tensors = read_weights(directory)  # bounded by the files' sizes, which now fit
    model = GPT2(**sizes, dropout=dropout, bias=True)
    if any(p.is_meta for p in model.parameters()):
        raise UserError("GPT2Pretrained cannot be built on the meta device (it loads weights)")
    state = _from_hf(tensors, source=directory)
    model.load_state_dict(state)
    return model


def hf_shapes(sizes: Mapping[str, int]) -> tuple[dict[str, tuple[int, ...]],
                                                   dict[str, tuple[int, ...]]]:
    """The shapes Hugging Face stores for a GPT-2 of ``sizes``: the model-wide tensors
    (names after ``transformer.``) and those of every block (after ``transformer.h.N.``)."""
    v, p, e = sizes["vocab_size"], sizes["n_positions"], sizes["n_embd"]
    top = {"wte.weight": (v, e), "wpe.weight": (p, e), "ln_f.weight": (e,), "ln_f.bias": (e,)}
    block = {
        "ln_1.weight": (e,), "ln_1.bias": (e,),
        "attn.c_attn.weight": (e, 3 * e), "attn.c_attn.bias": (3 * e,),
        "attn.c_proj.weight": (e, e), "attn.c_proj.bias": (e,),
        "ln_2.weight": (e,), "ln_2.bias": (e,),
        "mlp.c_fc.weight": (e, 4 * e), "mlp.c_fc.bias": (4 * e,),
        "mlp.c_proj.weight": (4 * e, e), "mlp.c_proj.bias": (e,),
    }
    return top, block


_BLOCK_NAME = re.compile(r"h\.(0|[1-9][0-9]*)\.(.+)")


def check_weights_fit(
    infos: Mapping[str, WeightInfo], sizes: Mapping[str, int], source: Path
) -> None:
    """Every tensor config.json's sizes imply is in the weights with its shape and a float
    dtype, and nothing else is; ``UserError`` naming each mismatch otherwise.

    Works from the headers alone and walks the file's tensors, not the config's layers,
    so a config.json claiming 10**5 layers or n_embd=10**6 fails at once.
    """
    top, block = hf_shapes(sizes)
    n_layer = sizes["n_layer"]
    problems, found = [], set()
    # Model-wide tensors first, then block by block: the first lines show the sizes.
    for name, info in sorted(infos.items(), key=lambda item: _report_order(item[0])):
        key = _canonical(name)
        if key.endswith(_BUFFERS):
            continue
        if key == "lm_head.weight":
            want = top["wte.weight"]
        elif (match := _BLOCK_NAME.fullmatch(key.removeprefix("transformer."))) is not None:
            want = block.get(match[2]) if int(match[1]) < n_layer else None
        else:
            want = top.get(key.removeprefix("transformer."))
        if want is None:
            problems.append(f"unexpected {name}")
            continue
        if key in found:
            problems.append(f"{name}: stored twice (with and without the transformer. prefix)")
        elif info.shape != want:
            problems.append(f"{name}: shape {info.shape}, expected {want}")
        elif not info.dtype.is_floating_point:
            problems.append(f"{name}: dtype {info.dtype}, expected a floating-point type")
        found.add(key)
    missing = (k for k in _expected_names(top, block, n_layer) if k not in found)
    problems += [f"missing {k}" for k in itertools.islice(missing, 8)]
    missing_count = len(top) + len(block) * n_layer - len(found - {"lm_head.weight"})
    if missing_count > 8:
        problems.append(f"... {missing_count} tensors missing in all (config.json says "
                        f"n_layer={n_layer})")
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"]
                                 if len(problems) > 12 else [])
        raise UserError(f"{source}: the weights do not fit a GPT-2 of its config.json "
                        f"({_describe(sizes)})", shown)


def _canonical(name: str) -> str:
    # Checkpoints saved from GPT2Model (the original "gpt2" among them) lack the prefix.
    return name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"


def _report_order(name: str) -> tuple[int, str]:
    match = _BLOCK_NAME.fullmatch(_canonical(name).removeprefix("transformer."))
    return (-1, name) if match is None else (int(match[1]), match[2])


def _expected_names(top: Mapping[str, Any], block: Mapping[str, Any], n_layer: int):
    yield from (f"transformer.{k}" for k in top)
    for i in range(n_layer):  # lazily: the caller stops after the first few missing
        yield from (f"transformer.h.{i}.{k}" for k in block)


def _describe(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def gpt2_sizes(config: Mapping[str, Any], source: Path) -> dict[str, int]:
    """GPT2's constructor sizes from a config.json; refuses what GPT2 cannot reproduce."""
    problems = []
    if config.get("model_type") != "gpt2":
        problems.append(f"model_type is {config.get('model_type')!r}, not 'gpt2'")
    sizes = {key: config.get(key, default) for key, default in _DEFAULT_SIZES.items()}
    for key, value in sizes.items():
        if type(value) is not int or value < 1:
            problems.append(f"{key} must be a positive integer, got {value!r}")
    n_embd, n_head = sizes["n_embd"], sizes["n_head"]
    if not problems and n_embd % n_head:
        problems.append(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
    if config.get("activation_function", "gelu_new") not in _ACTIVATIONS:
        problems.append(f"activation_function {config['activation_function']!r} is not one of "
                        f"{', '.join(_ACTIVATIONS)} (GELU, tanh approximation)")
    n_inner = config.get("n_inner")
    if n_inner is not None and n_inner != 4 * n_embd:
        problems.append(f"n_inner={n_inner}: only 4 * n_embd is supported")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5, rel_tol=1e-6):
        problems.append(f"layer_norm_epsilon={eps!r}: only 1e-5 is supported")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False)):
        if config.get(key, want) != want:
            problems.append(f"{key}={config[key]!r}: only {want} is supported")
    if problems:
        raise UserError(f"{source}: this model cannot be loaded as llm_gym's GPT2", problems)
    return sizes


def _add(tensors: dict[str, torch.Tensor], prefix: str, module: nn.Module) -> None:
    weight = module.weight.detach()
    is_linear = isinstance(module, nn.Linear)
    tensors[f"{prefix}.weight"] = weight.t().contiguous() if is_linear else weight
    bias = module.bias
    size = weight.shape[0]
    tensors[f"{prefix}.bias"] = torch.zeros(size, dtype=weight.dtype) if bias is None else bias


def _from_hf(tensors: Mapping[str, torch.Tensor], *, source: Path) -> dict[str, torch.Tensor]:
    """Hugging Face tensors renamed and laid out as our state_dict (``check_weights_fit``
    has checked every name and shape)."""
    named = {}
    for name, tensor in tensors.items():
        key = _canonical(name)
        if not key.endswith(_BUFFERS):
            named[key] = tensor.t() if key.endswith(_TRANSPOSED) else tensor
    head = named.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, named["transformer.wte.weight"]):
        raise UserError(f"{source}: lm_head.weight differs from transformer.wte.weight; "
                        "llm_gym's GPT2 ties them, so an untied head cannot be loaded")
    named["lm_head.weight"] = named["transformer.wte.weight"]
    return named


@component("model", "GPT2Pretrained", version=1)
class GPT2PretrainedConfig(ComponentConfig):
    """GPT-2 with sizes and weights from a Hugging Face GPT-2 directory (see `import hf`)."""

    hf_adapter: ClassVar[GPT2HFAdapter] = GPT2HFAdapter()
    # Built with trained weights: a run directory without checkpoints is still usable.
    loads_weights: ClassVar[bool] = True

    path: Path = Field(description="directory with config.json and model.safetensors "
                       "(or pytorch_model.bin, read with weights_only)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")

    def build(self) -> GPT2:
        return load_gpt2(self.path, dropout=self.dropout)
