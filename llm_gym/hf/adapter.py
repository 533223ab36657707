"""How the core finds the code that maps a model architecture to Hugging Face's layout.

The core knows no concrete model, so architecture-specific mapping lives with the model,
in its plugin, and is found through the registry: a ``model`` component whose config class
carries a class attribute ``hf_adapter`` (an object satisfying :class:`HFAdapter`) is the
"pretrained" variant of an architecture. Its config has a ``path`` field (a Hugging Face
directory to load) and ``loads_weights = True``; its adapter exports models of that
architecture (``handles``/``to_hf``) and says which tokenizer component reads a
directory's tokenizer files (``tokenizer_entry``).

A third-party plugin adds an architecture the same way; nothing in the core changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from llm_gym.errors import UserError
from llm_gym.registry import ComponentSpec, ResolverRegistry


@runtime_checkable
class HFAdapter(Protocol):
    """Converts one architecture to and from a Hugging Face model directory."""

    #: config.json's ``model_type`` this adapter reads and writes (e.g. "gpt2").
    model_type: str
    #: The recipe ``import hf`` takes everything but the model from when none is given: one
    #: written for this architecture (its optimizer and schedule suit it; e.g. "gpt2-tiny").
    default_recipe: str

    def handles(self, model: nn.Module) -> bool:
        """Whether ``model`` (as built from a recipe) is of this architecture."""
        ...

    def to_hf(
        self, model: nn.Module, *, eod_id: int | None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``config.json`` contents and the tensors under Hugging Face's names and layout."""
        ...

    def tokenizer_entry(
        self, directory: Path, config: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """A recipe ``tokenizer`` entry reading ``directory``'s tokenizer files, if any."""
        ...


def hf_components(registry: ResolverRegistry) -> list[tuple[ComponentSpec, HFAdapter]]:
    """Every registered model component that carries an ``hf_adapter``."""
    if "model" not in registry.kinds:
        return []
    found = []
    for spec in registry.kind("model").specs:
        adapter = getattr(spec.config_cls, "hf_adapter", None)
        if isinstance(adapter, HFAdapter):
            found.append((spec, adapter))
    return found


def adapter_for_model(registry: ResolverRegistry, model: nn.Module) -> HFAdapter:
    """The adapter that exports ``model``; ``UserError`` naming the supported types if none."""
    for _, adapter in hf_components(registry):
        if adapter.handles(model):
            return adapter
    raise UserError(
        f"no installed plugin exports a {type(model).__name__} model to the Hugging Face "
        f"format (supported: {_supported(registry)})"
    )


def component_for_model_type(
    registry: ResolverRegistry, model_type: Any
) -> tuple[ComponentSpec, HFAdapter]:
    """The pretrained model component that loads config.json's ``model_type``."""
    for spec, adapter in hf_components(registry):
        if adapter.model_type == model_type:
            return spec, adapter
    raise UserError(
        f"cannot import a Hugging Face model of model_type {model_type!r} "
        f"(supported: {_supported(registry)})"
    )


def _supported(registry: ResolverRegistry) -> str:
    types = sorted({adapter.model_type for _, adapter in hf_components(registry)})
    return ", ".join(types) or "none"
