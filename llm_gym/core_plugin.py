"""The core's own plugin: the recipe slots and sections the runner needs.

The core knows the roles (a model, an optimizer, ...) but no concrete component; those
come from plugins, the built-in set included.
"""

from __future__ import annotations

from typing import Any

from llm_gym.registry import Slot, hookimpl

RUNNER_SLOTS = (
    Slot("model", "model", required=True, doc="the network to train"),
    Slot("loss", "loss", required=True, doc="turns logits and targets into a scalar"),
    Slot("optimizer", "optimizer", required=True, doc="updates the model's parameters"),
    Slot("scheduler", "scheduler", doc="changes the learning rate over steps"),
    Slot("tokenizer", "tokenizer", doc="text <-> token ids"),
    Slot("train_dataset", "dataset", required=True, doc="token blocks to train on"),
    Slot("eval_dataset", "dataset", doc="token blocks to evaluate on"),
)


@hookimpl
def llm_gym_recipe_slots() -> tuple[Slot, ...]:
    return RUNNER_SLOTS


@hookimpl
def llm_gym_unslotted_kinds() -> tuple[str, ...]:
    return ("logger",)  # chosen by the list trainer.loggers


@hookimpl
def llm_gym_recipe_sections() -> dict[str, Any]:
    from llm_gym.runner.settings import TrainerSettings

    return {"trainer": TrainerSettings}
