"""Components inside components: a config field typed ``Component["kind"]`` validates,
shows in the schema, pins and builds like a slot, at any depth."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from llm_gym.config.recipe_model import recipe_json_schema
from llm_gym.errors import UserError
from llm_gym.recipes.loading import load_recipe
from llm_gym.recipes.pins import current_pins, find_drift
from llm_gym.registry import ComponentConfig, ResolverRegistry, component
from llm_gym.registry.nesting import Component
from tests.conftest import REPO, run_cli, write_fake_distribution

# The whole plugin, one file: a new kind whose component holds components of another.
SCHEDULE_PLUGIN = '''
from typing import Any

from pydantic import Field
from torch.optim.lr_scheduler import SequentialLR

from llm_gym.registry import Component, ComponentConfig, component, hookimpl

Scheduler = Component["scheduler"]


@component("schedule", "Sequence", version=1)
class SequenceConfig(ComponentConfig):
    """Schedulers one after another, switching at the milestones."""

    schedulers: list[Scheduler] = Field(min_length=1, description="in the order they run")
    milestones: list[int] = Field(default_factory=list, description="steps that switch")

    def build(self, optimizer: Any, schedulers: list[Any]) -> SequentialLR:
        return SequentialLR(optimizer, schedulers, self.milestones)


@hookimpl
def llm_gym_components():
    return [SequenceConfig]
'''

SEQUENCE = ("schedule={type_hint: Sequence, config: {milestones: [3], schedulers: "
            "[{type_hint: ConstantLR, config: {factor: 0.5, total_iters: 3}}, Constant]}}")


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry(tmp_path: Path) -> ResolverRegistry:
    path = tmp_path / "schedule_plugin.py"
    path.write_text(SCHEDULE_PLUGIN)
    registry = ResolverRegistry.from_installed_plugins()
    registry.register_plugin(_load_module(path, "schedule_plugin"), name="schedule")
    return registry


def test_a_kind_holding_components_validates_shows_in_the_schema_pins_and_builds(registry):
    loaded = load_recipe("gpt2-debug", [SEQUENCE, "scheduler=null"], registry=registry,
                         allow_drift=True)
    sequence = loaded.recipe.schedule
    first, second = sequence.config.schedulers
    assert first.type_hint.name == "ConstantLR" and first.config.factor == 0.5
    assert second.type_hint.name == "Constant"  # the bare-name shorthand, defaults filled
    assert second.config.warmup_steps == 0

    # Pinned at any depth: the nested schedulers as well as their holder.
    pins = current_pins(loaded.recipe)
    assert {"schedule/Sequence", "scheduler/ConstantLR", "scheduler/Constant"} <= set(pins)

    # Editors complete the nested configs: the field refers to the scheduler union.
    schema = recipe_json_schema(registry)
    field = schema["$defs"]["SequenceConfig"]["properties"]["schedulers"]
    assert field["items"] == {"$ref": "#/$defs/component_scheduler"}
    entry, _name = schema["$defs"]["component_scheduler"]["anyOf"]
    assert {"$ref": "#/$defs/scheduler_StepLR"} in entry["oneOf"]
    assert {"const": "StepLR"} in schema["$defs"]["scheduler_StepLR"]["properties"]["type_hint"][
        "anyOf"]

    # Built bottom-up: the nested schedulers got the optimizer a slot would get.
    model = torch.nn.Linear(2, 2)
    built = registry.build_components(
        {"optimizer": loaded.recipe.optimizer, "schedule": sequence},
        extra_kwargs={"model": model})
    inner = built["schedule"]._schedulers
    assert [type(s).__name__ for s in inner] == ["ConstantLR", "LambdaLR"]
    assert all(s.optimizer is built["optimizer"] for s in inner)


def test_nested_mistakes_name_the_full_path_and_the_closest_name(registry):
    bad = SEQUENCE.replace("Constant]", "{type_hint: StepLr, config: {step_siz: 2}}, "
                                        "PackedTokens]")
    with pytest.raises(UserError) as caught:
        load_recipe("gpt2-debug", [bad], registry=registry)
    problems = "\n".join(caught.value.problems)
    assert ("schedule.config.schedulers[1].config.step_siz: unexpected key; did you mean "
            "'step_size'?") in problems
    # A component of another kind is named as not being one of this kind.
    assert "schedule.config.schedulers[2].type_hint: no scheduler named 'PackedTokens'" in problems
    assert "registered: Constant, ConstantLR, StepLR" in problems


def test_drift_of_a_nested_component_is_named_by_its_path(registry):
    from llm_gym.config.recipe_model import Pin

    loaded = load_recipe("gpt2-debug", [SEQUENCE], registry=registry, allow_drift=True)
    pins = {key: Pin(**pin) for key, pin in current_pins(loaded.recipe).items()}
    pins["scheduler/Constant"] = Pin(version=1, fingerprint="0" * 12)
    pinned = loaded.recipe.model_copy(update={"pins": pins})
    (drift,) = find_drift(pinned, registry)
    assert drift.component_changed
    assert str(drift).startswith("scheduler/Constant (at schedule.config.schedulers[1]): "
                                 "fingerprint 000000000000 -> ")


def test_a_nested_component_missing_a_dependency_is_named_by_its_path(registry):
    from llm_gym.registry.building import build_order

    Scheduler = Component["scheduler"]

    @component("collection", "Schedulers")
    class SchedulersConfig(ComponentConfig):
        schedulers: list[Scheduler]

        def build(self, schedulers: list) -> list:
            return schedulers

    registry.register_component(SchedulersConfig)
    with registry.active():
        choice = registry.kind("collection").adapter.validate_python(
            {"type_hint": "Schedulers", "config": {"schedulers": ["Constant"]}})
    with pytest.raises(UserError, match=r"collection\.config\.schedulers\[0\] "
                                        r"\(scheduler/Constant\) needs 'optimizer'"):
        build_order({"collection": choice}, provided=())
    # With an optimizer slot, the holder is built after it, for its children's sake.
    loaded = load_recipe("gpt2-debug", [], registry=registry)
    order = build_order({"collection": choice, "optimizer": loaded.recipe.optimizer},
                        provided=("model",))
    assert order == ["optimizer", "collection"]


def test_the_recipe_round_trips_through_its_dump(registry):
    loaded = load_recipe("gpt2-debug", [SEQUENCE], registry=registry, allow_drift=True)
    dumped = loaded.recipe.model_dump(mode="json")
    nested = dumped["schedule"]["config"]["schedulers"]
    assert nested[0] == {"type_hint": "ConstantLR", "config": {"factor": 0.5, "total_iters": 3}}
    assert nested[1] == {"type_hint": "Constant", "config": {"warmup_steps": 0}}
    assert dumped["trainer"]["loggers"] == [{"type_hint": "Console", "config": {}}]
    with registry.active():
        again = type(loaded.recipe).model_validate(dumped)
    assert again == loaded.recipe


def test_build_must_take_each_nested_field():
    Scheduler = Component["scheduler"]

    with pytest.raises(TypeError, match="build\\(\\) must take a parameter per nested "
                                        "component field.*: schedulers"):
        @component("schedule", "Forgetful")
        class ForgetfulConfig(ComponentConfig):
            schedulers: list[Scheduler]

            def build(self, optimizer):
                return None


def test_a_kind_holding_its_own_kind_keeps_its_slot_and_a_recursive_schema():
    Widget = Component["widget"]

    @component("widget", "Leaf")
    class LeafConfig(ComponentConfig):
        size: int = 1

        def build(self) -> int:
            return self.size

    @component("widget", "Group")
    class GroupConfig(ComponentConfig):
        parts: dict[str, Widget]
        spare: Widget | None = None

        def build(self, parts: dict[str, int], spare: int | None) -> int:
            return sum(parts.values()) + (spare or 0)

    registry = ResolverRegistry()
    registry.register_component(LeafConfig)
    registry.register_component(GroupConfig)
    assert [s.name for s in registry.slots()] == ["widget"]
    from llm_gym.config.recipe_model import build_recipe_model

    data = {"widget": {"type_hint": "Group", "config": {"parts": {
        "a": "Leaf", "b": {"type_hint": "Group", "config": {"parts": {
            "c": {"type_hint": "Leaf", "config": {"size": 5}}}, "spare": "Leaf"}}}}}}
    with registry.active():
        recipe = build_recipe_model(registry).model_validate(data)
    assert registry.build_components(recipe.components()) == {"widget": 1 + 5 + 1}
    schema = recipe_json_schema(registry)
    group = schema["$defs"]["GroupConfig"]["properties"]
    assert group["parts"]["additionalProperties"] == {"$ref": "#/$defs/component_widget"}
    assert "component_widget" in schema["$defs"]


def test_components_show_names_the_kind_a_field_holds(tmp_path):
    site = write_fake_distribution(tmp_path / "site", "schedule_pkg",
                                   {"__init__.py": SCHEDULE_PLUGIN})
    shown = run_cli("components", "show", "schedule", "Sequence",
                    env={"PYTHONPATH": f"{site}:{REPO}", "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "list[scheduler component]" in shown.stdout
    assert "built from: optimizer" in shown.stdout
    for name in [m for m in sys.modules if m.startswith("schedule_pkg")]:
        del sys.modules[name]


def test_an_override_reaches_into_a_nested_list_by_the_path_errors_print(registry):
    loaded = load_recipe("gpt2-debug", [
        SEQUENCE, "schedule.config.schedulers[0].config.factor=0.25",
        "schedule.config.schedulers[1]={type_hint: Constant, config: {warmup_steps: 2}}",
        "trainer.loggers=[Console]", "trainer.loggers[0]=Curves"], registry=registry,
        allow_drift=True)
    first, second = loaded.recipe.schedule.config.schedulers
    assert first.config.factor == 0.25 and first.config.total_iters == 3  # merged, not replaced
    assert second.config.warmup_steps == 2
    assert [c.type_hint.name for c in loaded.recipe.trainer.loggers] == ["Curves"]


def _takes_string(schema: dict, node: dict, value: str) -> bool:
    """Whether ``node`` of ``schema`` accepts the string ``value``, for the forms
    recipe_json_schema writes (refs, anyOf/oneOf, type, enum, const, pattern): a
    structural check, as no JSON Schema validator is a dependency."""
    if "$ref" in node:
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[-1]],
                **{k: v for k, v in node.items() if k != "$ref"}}
    if node.get("type", "string") != "string":
        return False
    forms = [k for k in ("anyOf", "oneOf", "enum", "const", "pattern", "type") if k in node]
    if not forms:
        return False
    alternatives = node.get("anyOf", []) + node.get("oneOf", [])
    return ((not alternatives or any(_takes_string(schema, a, value) for a in alternatives))
            and ("enum" not in node or value in node["enum"])
            and ("const" not in node or value == node["const"])
            and ("pattern" not in node or re.search(node["pattern"], value) is not None))


def test_the_schema_takes_a_component_by_its_name_wherever_the_loader_does():
    schema = recipe_json_schema(ResolverRegistry.from_installed_plugins())
    defs = schema["$defs"]
    places = {
        "loss": schema["properties"]["loss"],  # a slot with one component
        "scheduler": schema["properties"]["scheduler"],  # an optional slot
        "trainer.loggers[]": defs["TrainerSettings"]["properties"]["loggers"]["items"],
        "Mixture sources[]": defs["MixtureConfig"]["properties"]["sources"]["items"],
    }
    accepted = {"loss": ["CrossEntropy", "cross_entropy"],
                "scheduler": ["WarmupCosine", "warmup-cosine", "STEP_LR"],
                "trainer.loggers[]": ["Console", "tensor_board"],
                "Mixture sources[]": ["DemoCorpus", "PackedTokens"]}
    refused = {"loss": ["CrossEntropyy", "AdamW", ""], "scheduler": ["Cosine"],
               "trainer.loggers[]": ["Consol", "Mixture"], "Mixture sources[]": ["JSONL"]}
    for place, node in places.items():
        for name in accepted[place]:
            assert _takes_string(schema, node, name), (place, name)
        for name in refused[place]:
            assert not _takes_string(schema, node, name), (place, name)
    # Completion lists the names; the mapping form is still there.
    name_form = defs["component_logger"]["anyOf"][1]
    assert name_form["anyOf"][0] == {"enum": ["Console", "Curves", "TensorBoard", "WandB"]}
    assert {"$ref": "#/$defs/logger_Console"} in defs["component_logger"]["anyOf"][0]["oneOf"]


def test_components_show_renders_types_and_the_whole_summary():
    from llm_gym.registry.component import spec_of
    from llm_gym.registry.fields import describe_fields
    from llm_gym_components.datasets.mixture import MixtureConfig
    from llm_gym_components.evaluators.text_perplexity import TextPerplexityConfig

    types = {row[0]: row[1] for row in describe_fields(MixtureConfig)}
    assert types["weights"] == "list[float > 0]"
    assert types["sources"] == "list[dataset component]"
    assert types["on_exhausted"] == "Literal['cycle', 'stop']"
    limit = {row[0]: row[1] for row in describe_fields(TextPerplexityConfig)}["limit"]
    assert limit == "int > 0 | None"
    # The summary wraps over two lines of the docstring: all of it, not the first line.
    assert spec_of(MixtureConfig).doc == (
        "Samples drawn from several datasets in proportions of tokens, the same for any "
        "world size; its position, saved in checkpoints, resumes exactly.")


def test_the_schema_takes_interpolations_and_any_spelling_of_a_type_hint():
    """What every shipped recipe holds: ``${...}`` where a number, list, mapping or choice
    belongs, and ``type_hint: gpt-2`` as the loader resolves it (checked structurally,
    as no JSON Schema validator is a dependency; a jsonschema run checks the recipes)."""
    schema = recipe_json_schema(ResolverRegistry.from_installed_plugins())
    defs = schema["$defs"]
    interpolation = "${trainer.seq_len}"
    for number in (defs["TrainerSettings"]["properties"]["seed"],
                   defs["GPT2Config"]["properties"]["n_positions"]):
        assert "string" in number["type"] and re.search(number["pattern"], interpolation)
        assert not re.search(number["pattern"], "lots")
    weights = defs["MixtureConfig"]["properties"]["weights"]
    assert weights["type"] == ["array", "string"] and weights["items"]["type"][0] == "number"
    assert _takes_string(schema, defs["TrainerSettings"]["properties"]["param_dtype"],
                         "${oc.env:DTYPE,bf16}")
    assert not _takes_string(schema, defs["TrainerSettings"]["properties"]["param_dtype"],
                             "bf61")
    type_hint = defs["model_GPT2"]["properties"]["type_hint"]
    for spelling in ("GPT2", "gpt-2", "gpt_2"):
        assert _takes_string(schema, type_hint, spelling), spelling
    for other in ("GPT3", "Llama", interpolation):
        assert not _takes_string(schema, type_hint, other), other


def test_a_nested_settings_default_is_shown_as_a_recipe_writes_it():
    from llm_gym.registry.fields import describe_fields
    from llm_gym.runner.settings import TrainerSettings

    defaults = {row[0]: row[2] for row in describe_fields(TrainerSettings)}
    assert defaults["parallel"] == "{dp_replicate: 1, dp_shard: -1, tp: 1}"
