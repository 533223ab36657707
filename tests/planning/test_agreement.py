"""The plan against measurement on the configurations this CPU can run: 1 and 2 processes.

State bytes are the storages of parameters, gradients and optimizer states on each rank
after one real training step (2 gloo processes under launch_local, and 1 process);
activations are what autograd saves in one forward (saved-tensor hooks); FLOPs are what
FlopCounterMode counts in one training step. Each must agree within 10%, for GPT-2 and
for Llama's variants (grouped and multi-query attention, qk_norm, tied and untied
embeddings, SwiGLU sizes from ffn_multiplier and multiple_of; tests/planning/helpers.py).
"""

from __future__ import annotations

import pytest

from llm_gym.planning.memory import activations
from llm_gym.planning.plan import Plan, make_plan
from llm_gym.recipes.loading import load_recipe
from llm_gym.runner.launcher import launch_local

from . import helpers as h

TOLERANCE = 0.10

# Optimizer, precision and checkpointing variants, one launch for all of them.
SGD = ("optimizer.type_hint=SGD", "optimizer.config.momentum=0.9")
BF16 = ("trainer.param_dtype=bf16", "trainer.reduce_dtype=fp32")
STATE_CONFIGS = [(), SGD, BF16]
ACTIVATION_CONFIGS = [(), ("trainer.activation_checkpointing=full",),
                      ("trainer.activation_checkpointing=2",), BF16]


MODELS = list(h.MODELS)
# Llama's recipe gives AdamW betas, which SGD has no key for (an override cannot remove a
# key); SGD's states depend on the parameters' shapes only, which the others cover.
STATES = {model: [c for c in STATE_CONFIGS if model == "gpt2" or c != SGD] for model in MODELS}


def plan_of(overrides: tuple[str, ...], ranks: int, model: str = "gpt2") -> Plan:
    name, all_overrides = h.recipe_of(model, overrides)
    loaded = load_recipe(name, all_overrides)
    return make_plan(loaded.recipe, label=name, nodes=1, gpus_per_node=ranks, gpu="h100")


def check(what: str, planned: float, measured: float) -> None:
    off = planned / measured - 1
    print(f"{what}: plan {planned:,.0f}, measured {measured:,.0f}, {off:+.2%}")
    assert abs(off) <= TOLERANCE, f"{what}: the plan is {off:+.1%} off the measurement"


@pytest.fixture(scope="module")
def states() -> dict[str, dict[int, list[list[dict[str, int]]]]]:
    out = {}
    for model in MODELS:
        two = launch_local(2, h.measure_states, (STATES[model], model))
        out[model] = {1: [h.measure_states(STATES[model], model)],
                      2: [two[r] for r in sorted(two)]}
    return out


@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize(("model", "config"),
                         [(m, i) for m in MODELS for i in range(len(STATES[m]))])
def test_state_bytes_per_rank_match_the_plan(states: dict, model: str, nproc: int,
                                             config: int) -> None:
    overrides = STATES[model][config]
    planned = plan_of(overrides, nproc, model).memory()
    for per_rank in states[model][nproc]:
        measured = per_rank[config]
        for part in ("params", "grads", "optimizer"):
            check(f"{model}, {nproc} proc, rank {measured['rank']}, "
                  f"{overrides or 'AdamW fp32'}, {part}", getattr(planned, part), measured[part])


@pytest.mark.parametrize("model", MODELS)
def test_saved_activations_match_the_plan(model: str) -> None:
    measured = h.measure_activations(ACTIVATION_CONFIGS, model)
    for overrides, bytes_ in zip(ACTIVATION_CONFIGS, measured, strict=True):
        plan = plan_of(overrides, 1, model)
        check(f"{model}, activations {overrides or 'fp32, no checkpointing'}",
              activations(plan.shape, plan.setup), bytes_)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("ac", ["none", "full"])
def test_flops_per_step_match_the_plan(model: str, ac: str) -> None:
    overrides = (f"trainer.activation_checkpointing={ac}",)
    plan = plan_of(overrides, 1, model)
    # Checkpointing re-runs forwards: the counter sees hardware FLOPs, not model FLOPs.
    planned = plan.model_flops_per_step if ac == "none" else plan.hardware_flops_per_step
    check(f"{model}, FLOPs per step, AC {ac}", planned, h.measure_flops(overrides, model))
