"""What a model component promises the core: the one interface the runner, the planner,
the sampler and the Hugging Face code rely on, instead of probing a model for attributes.

A model is a ``torch.nn.Module`` whose ``forward(input_ids[B, T])`` returns logits
``[B, T, vocab_size]`` and that has every part of :class:`LanguageModel`:

- ``blocks``: its transformer blocks, in order; each is one unit of FSDP sharding,
  activation checkpointing and compilation (``runner/parallelize.py``);
- ``init_weights()``: (re-)initialises every parameter and buffer in place, so a model
  built on the meta device and moved with ``to_empty`` gets its real values;
- ``flops_per_token(seq_len)``: training FLOPs (forward and backward) per token, for
  MFU and the planner;
- ``num_params()``: its parameter count, tied weights once (the N of the ``6 N``
  estimate, so a model may leave out weights that cost no matmul);
- ``block_activation_bytes(dtype, checkpointed=...)`` and ``root_activation_bytes(dtype)``:
  the planner's memory model, bytes saved for backward per token by one block (with
  checkpointing: what a checkpointed block keeps, its input) and by the layers outside
  the blocks (embeddings, final norm; the loss is the planner's), in compute dtype ``dtype``;
- ``max_seq_len`` and ``vocab_size``: the longest input and the number of token ids;
- ``generate(input_ids, max_new_tokens, temperature=1.0, top_k=None, generator=None)``:
  appends sampled tokens (``temperature=0``: greedy), cropping the context to
  ``max_seq_len``. The built-in models implement it with the one sampler,
  ``llm_gym.sampling.sample_tokens`` (also top_p and stop_token), which ``llm_gym
  generate`` and the trainer's sample use too and which samples any contract model.

Three parts are optional. A Hugging Face adapter: a "pretrained" model component carries an
``hf_adapter`` class attribute (``llm_gym.hf.adapter.HFAdapter``); a model without one
trains, plans and samples, and only ``export hf`` / ``import hf`` refuse it. Cached
decoding: a model that derives from ``llm_gym.kv_cache.CachedDecoding`` (and takes
``forward(input_ids, kv_cache=...)``) decodes one token per step; any other model is
sampled by running its whole context each step. Tensor parallelism: a model with a
``tensor_parallel_plan()`` method returns a ``llm_gym.tensor_parallel_plan.TensorParallelPlan``
(which of its layers are cut how); ``trainer.parallel.tp`` above 1 refuses a model
without one.

``recipe validate`` (and ``run``) refuse a model component whose class lacks a part, by
the class its ``build`` is annotated to return; the runner and planner check the built
model again (a ``build`` may return something else than it declares).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from llm_gym.errors import UserError


@runtime_checkable
class LanguageModel(Protocol):
    """The parts every model has; see the module docstring for what each promises."""

    vocab_size: int
    max_seq_len: int

    @property
    def blocks(self) -> Sequence[nn.Module]: ...

    def init_weights(self) -> None: ...

    def flops_per_token(self, seq_len: int) -> int: ...

    def num_params(self) -> int: ...

    def block_activation_bytes(self, dtype: torch.dtype, *, checkpointed: bool) -> int: ...

    def root_activation_bytes(self, dtype: torch.dtype) -> int: ...

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


# The protocol's parts, in the order the module docstring explains them. Attributes set in
# ``__init__`` (vocab_size, max_seq_len) are found on a class through its annotations.
REQUIRED_PARTS: tuple[str, ...] = (
    "blocks", "init_weights", "flops_per_token", "num_params", "block_activation_bytes",
    "root_activation_bytes", "max_seq_len", "vocab_size", "generate",
)
_METHODS = frozenset({"init_weights", "flops_per_token", "num_params", "block_activation_bytes",
                      "root_activation_bytes", "generate"})


def missing_parts(model_or_class: Any) -> list[str]:
    """The parts of the contract that a model (an instance or its class) lacks."""
    is_class = isinstance(model_or_class, type)
    annotated: set[str] = set()
    if is_class:
        for klass in model_or_class.__mro__:
            annotated.update(getattr(klass, "__annotations__", {}))
    missing = []
    for part in REQUIRED_PARTS:
        if part in _METHODS:
            ok = callable(getattr(model_or_class, part, None))
        elif is_class:
            ok = hasattr(model_or_class, part) or part in annotated
        else:
            ok = hasattr(model_or_class, part)
        if not ok:
            missing.append(part)
    if not (is_class and issubclass(model_or_class, nn.Module)) and not (
            not is_class and isinstance(model_or_class, nn.Module)):
        missing.insert(0, "torch.nn.Module base")
    return missing


def _refusal(name: str, what: str, missing: list[str]) -> str:
    return (f"model {name} ({what}) does not satisfy the model contract "
            f"(llm_gym.model_contract.LanguageModel): missing {', '.join(missing)}")


def as_language_model(model: Any, name: str | None = None) -> LanguageModel:
    """``model`` itself, checked against the contract; a UserError names what it lacks."""
    missing = missing_parts(model)
    if missing:
        cls = type(model)
        raise UserError(_refusal(name or cls.__name__, f"a {cls.__module__}.{cls.__qualname__}",
                                 missing))
    return typing.cast(LanguageModel, model)


def declared_model_class(config_cls: type) -> type | None:
    """The class a model config's ``build`` is annotated to return, if it resolves."""
    try:
        built = typing.get_type_hints(config_cls.build).get("return")
    except Exception:  # an annotation that does not resolve: nothing declared
        return None
    return built if isinstance(built, type) else None


def contract_problems(recipe: Any) -> Iterator[str]:
    """A recipe check (``llm_gym_recipe_checks``): the model slot's component declares a
    class that has every part of the contract. Nothing is built."""
    choice = recipe.components().get("model")
    if choice is None:
        return
    name = choice.type_hint.name
    config_cls = type(choice.config)
    declared = declared_model_class(config_cls)
    if declared is None:
        yield (f"model.type_hint: model {name}: {config_cls.__qualname__}.build() declares no "
               "model class (annotate its return type with the class it builds), so the model "
               "contract (llm_gym.model_contract.LanguageModel) cannot be checked")
        return
    missing = missing_parts(declared)
    if missing:
        hint = ""
        if {"vocab_size", "max_seq_len"} & set(missing):
            hint = ("; an attribute set in __init__ is found on the class by its annotation "
                    "in the class body (`vocab_size: int`) or as a property")
        yield ("model.type_hint: " + _refusal(name, f"class {declared.__qualname__}", missing)
               + hint)


def build_on_meta(registry: Any, recipe: Any) -> nn.Module:
    """The recipe's model with meta tensors: every shape, no storage (the planner reads
    its shapes, the launcher its tensor-parallel plan)."""
    try:
        with torch.device("meta"):
            return registry.build_component_by_config(recipe.components()["model"])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"could not build the model on the meta device: "
                        f"{type(exc).__name__}: {exc}") from exc


def declares_tensor_parallel_plan(model_or_class: Any) -> bool:
    """True for a model (or model class) with the optional ``tensor_parallel_plan()``."""
    return callable(getattr(model_or_class, "tensor_parallel_plan", None))
