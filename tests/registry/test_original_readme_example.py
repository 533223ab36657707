"""The original LLMgym README's scheduler example, end to end on the new registry."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError


def _validated(registry, entry: dict):
    return TypeAdapter(registry.kind("scheduler").choice_type).validate_python(entry)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type_hint": "StepLR", "config": {"step_size": 100, "gamma": 0.5}},
         torch.optim.lr_scheduler.StepLR),
        ({"type_hint": "ConstantLR", "config": {"factor": 0.5, "total_iters": 10}},
         torch.optim.lr_scheduler.ConstantLR),
    ],
)
def test_scheduler_builds_through_extra_kwargs(optim_registry, entry, expected):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    config = _validated(optim_registry, entry)
    assert config.type_hint is optim_registry.enum("scheduler")[entry["type_hint"]]
    scheduler = optim_registry.build_component_by_config(
        config, extra_kwargs={"optimizer": optimizer}
    )
    assert type(scheduler) is expected
    assert scheduler.optimizer is optimizer


def test_step_lr_decays_through_injection(optim_registry):
    """optimizer gets the model, scheduler gets the optimizer, both injected by name."""
    model = torch.nn.Linear(2, 2)
    entries = {
        "optimizer": TypeAdapter(optim_registry.kind("optimizer").choice_type).validate_python(
            {"type_hint": "SGD", "config": {"lr": 1.0}}),
        "scheduler": _validated(
            optim_registry, {"type_hint": "StepLR", "config": {"step_size": 2, "gamma": 0.5}}),
    }
    built = optim_registry.build_components(entries, extra_kwargs={"model": model})
    assert isinstance(built["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert built["scheduler"].optimizer is built["optimizer"]
    assert built["optimizer"].param_groups[0]["params"][0] is model.weight
    lrs = []
    for _ in range(5):
        built["optimizer"].step()
        built["scheduler"].step()
        lrs.append(built["optimizer"].param_groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]


def test_build_component_by_key_query_validates_raw_kwargs(optim_registry):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = optim_registry.build_component_by_key_query(
        "scheduler", "StepLR", {"step_size": 3, "gamma": 0.1, "optimizer": optimizer}
    )
    assert scheduler.step_size == 3 and scheduler.gamma == 0.1
    with pytest.raises(ValidationError, match="step_size"):
        optim_registry.build_component_by_key_query(
            "scheduler", "StepLR", {"step_size": 0, "gamma": 0.1, "optimizer": optimizer}
        )


def test_lookup_enum_by_value_by_name_and_any_spelling(optim_registry):
    enum = optim_registry.enum("scheduler")
    member = enum["StepLR"]
    assert enum("StepLR") is member
    assert enum(member.value) is member  # the value is the config class
    assert enum("step_lr") is member
    assert member.value.__name__ == "StepLRConfig"
    with pytest.raises(ValueError):
        enum("NoSuchScheduler")


def test_add_resolver_keeps_the_original_api(optim_registry):
    from class_resolver import ClassResolver

    activations = ClassResolver([torch.nn.ReLU, torch.nn.Tanh], base=torch.nn.Module)
    optim_registry.add_resolver("activation", activations)
    made = optim_registry.build_component_by_key_query("activation", "tanh")
    assert isinstance(made, torch.nn.Tanh)
