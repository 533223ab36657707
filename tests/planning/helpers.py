"""Measure what the plan predicts, on a real model: state bytes, saved activations, FLOPs.

Module-level functions so that ``launch_local`` workers (spawned) find them by name.
The model, loss and optimizer come from the recipe through the registry and are
parallelized as the trainer does; the step mirrors ``Trainer._train_step`` (gradient
sync only on the last micro-batch, clipping, optimizer step) but keeps the gradients,
so they can be measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from llm_gym.recipes.loading import load_recipe
from llm_gym.registry import ResolverRegistry
from llm_gym.runner.distributed import World, distributed_world, seed_everything
from llm_gym.runner.parallelize import clip_grad_norm_, parallelize_as_configured
from tests.threads import single_threaded

RECIPE = "gpt2-debug"
# Small enough for seconds on a CPU, big enough that every term of the plan shows; the
# vocabulary (257) splits unevenly over 2 ranks, so padding is exercised.
BASE = (
    "model.config.n_embd=64", "model.config.n_layer=3", "model.config.n_head=4",
    "trainer.seq_len=64", "trainer.micro_batch_size=4", "trainer.grad_accumulation=2",
)
# Llama's variants: what changes its shapes, FLOPs and saved activations. The vocabulary
# (301) is odd, so it too splits unevenly; the SwiGLU hidden sizes come from the
# multiplier and multiple_of (2/3 x 4 x 64 = 170 -> 192; x 1.3 = 221 -> 240).
_LLAMA = ("model.config.vocab_size=301", "model.config.n_embd=64", "model.config.n_layer=3",
          "model.config.n_head=4", "trainer.seq_len=64", "trainer.micro_batch_size=4",
          "trainer.grad_accumulation=2")
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gpt2": (RECIPE, BASE),
    "llama GQA, tied": ("llama-tiny", (*_LLAMA, "model.config.n_kv_head=2",
                                       "model.config.multiple_of=64",
                                       "model.config.tie_embeddings=true")),
    "llama MQA, qk_norm, untied, ffn x1.3": (
        "llama-tiny", (*_LLAMA, "model.config.n_kv_head=1", "model.config.qk_norm=true",
                       "model.config.tie_embeddings=false", "model.config.ffn_multiplier=1.3",
                       "model.config.multiple_of=48")),
}


def recipe_of(model: str, overrides: Sequence[str]) -> tuple[str, list[str]]:
    """The recipe name and overrides of the model variant ``model`` (a MODELS key)."""
    name, base = MODELS[model]
    return name, [*base, *overrides]


def build(overrides: Sequence[str], world: World, model: str = "gpt2",
          ) -> tuple[nn.Module, Any, Any, Any]:
    """(model, loss, optimizer, trainer settings) built and sharded as the trainer does."""
    registry = ResolverRegistry.from_installed_plugins()
    name, all_overrides = recipe_of(model, overrides)
    recipe = load_recipe(name, all_overrides, registry=registry).recipe
    s, entries = recipe.trainer, recipe.components()
    seed_everything(s.seed, 0)
    with torch.device(world.device):
        model = registry.build_component_by_config(entries["model"])
    model = parallelize_as_configured(model, s, world, compile=False)
    built = registry.build_components(
        {k: entries[k] for k in ("loss", "optimizer")},
        extra_kwargs={"model": model, "world": world, "trainer": s})
    return model, built["loss"], built["optimizer"], s


def batch(s: Any, vocab: int, index: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(index)
    return torch.randint(0, vocab, (s.micro_batch_size, s.seq_len + 1), generator=gen)


def train_step(model: nn.Module, loss_fn: Any, optimizer: Any, s: Any) -> None:
    for micro in range(s.grad_accumulation):
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(micro == s.grad_accumulation - 1)
        tokens = batch(s, model.vocab_size, micro)
        loss = loss_fn(model(tokens[:, :-1]), tokens[:, 1:]) / s.grad_accumulation
        loss.backward()
    clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
    optimizer.step()


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a DTensor: its local shard)."""
    seen: dict[int, int] = {}
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        storage = local.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


@single_threaded
def measure_states(configs: Sequence[Sequence[str]], model_name: str = "gpt2",
                   ) -> list[dict[str, int]]:
    """Per config: bytes of this rank's parameters, gradients and optimizer states after
    one training step."""
    out = []
    with distributed_world() as world:
        for overrides in configs:
            model, loss_fn, optimizer, s = build(overrides, world, model_name)
            train_step(model, loss_fn, optimizer, s)
            params = list(model.parameters())
            states = [v for p in params for v in optimizer.state[p].values()
                      if isinstance(v, torch.Tensor)]
            out.append({
                "rank": world.rank,
                "params": storage_bytes(params),
                "grads": storage_bytes(p.grad for p in params if p.grad is not None),
                "optimizer": storage_bytes(states),
            })
    return out


def saved_activation_bytes(model: nn.Module, loss_fn: Any, s: Any) -> int:
    """Bytes autograd saves for backward in one forward + loss, parameters excluded.

    Tensors are counted once per storage (q, k and v are views of one matmul output).
    A parameter, or a view of one (a transposed weight), is a leaf that requires grad.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if not (base.is_leaf and base.requires_grad):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    tokens = batch(s, model.vocab_size, 0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model(tokens[:, :-1]), tokens[:, 1:])
    return sum(seen.values())


def measure_activations(configs: Sequence[Sequence[str]], model_name: str = "gpt2",
                        ) -> list[int]:
    with distributed_world() as world:
        out = []
        for overrides in configs:
            model, loss_fn, _, s = build(overrides, world, model_name)
            out.append(saved_activation_bytes(model, loss_fn, s))
    return out


def measure_flops(overrides: Sequence[str], model_name: str = "gpt2") -> int:
    """FLOPs FlopCounterMode counts in one training step (all micro-batches and the
    optimizer step).

    Attention runs on the math backend: the counter has no formula for the CPU's fused
    attention kernel, but it sees the math backend's matmuls.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with distributed_world() as world:
        model, loss_fn, optimizer, s = build(overrides, world, model_name)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            train_step(model, loss_fn, optimizer, s)
    return counter.get_total_flops()
