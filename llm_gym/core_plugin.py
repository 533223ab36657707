"""The core's own plugin: the recipe slots and sections the runner needs.

The core knows the roles (a model, an optimizer, ...) but no concrete component; those
come from plugins, the built-in set included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
def llm_gym_recipe_sections() -> dict[str, Any]:
    from llm_gym.runner.settings import TrainerSettings

    return {"trainer": TrainerSettings}


@hookimpl
def llm_gym_recipe_checks() -> tuple[Callable[[Any], Iterable[str]], ...]:
    return (eval_needs_an_eval_dataset, loggers_ask_for_what_the_runner_gives,
            evaluators_ask_for_what_the_run_has, model_satisfies_the_contract,
            boundaries_need_a_model_that_masks_by_them)


def eval_needs_an_eval_dataset(recipe: Any) -> Iterator[str]:
    """``trainer.eval_every`` evaluates on the ``eval_dataset`` slot: it must be filled.
    (runner/trainer.py refuses it too, as a backstop for code that skips the checks.)"""
    trainer = getattr(recipe, "trainer", None)
    every = getattr(trainer, "eval_every", None)
    if every and getattr(recipe, "eval_dataset", None) is None:
        yield (f"trainer.eval_every: {every}, but the recipe has no eval_dataset to evaluate "
               "on: add an eval_dataset entry, or pass trainer.eval_every=null")


def loggers_ask_for_what_the_runner_gives(recipe: Any) -> Iterator[str]:
    """A logger is built by the runner on rank 0 from ``LOGGER_PROVIDES`` only (not from
    the recipe's slots): a build that needs anything else could never run."""
    from llm_gym.registry.building import needs_of
    from llm_gym.runner.metrics import LOGGER_PROVIDES

    for i, choice in enumerate(getattr(getattr(recipe, "trainer", None), "loggers", ())):
        for dep, where, spec in needs_of(choice, f"trainer.loggers[{i}]"):
            if dep.required and dep.name not in LOGGER_PROVIDES:
                yield (f"{where}: {spec.key}.build() needs {dep.name!r}; a logger can ask "
                       f"for {', '.join(LOGGER_PROVIDES)}")


def evaluators_ask_for_what_the_run_has(recipe: Any) -> Iterator[str]:
    """An evaluator is built by the runner from ``EVALUATOR_PROVIDES`` only; of those, the
    tokenizer and eval_dataset exist only when the recipe fills their slots."""
    from llm_gym.evaluation.evaluator import EVALUATOR_PROVIDES
    from llm_gym.registry.building import needs_of

    slots = recipe.components()
    for i, choice in enumerate(getattr(getattr(recipe, "trainer", None), "evaluators", ())):
        for dep, where, spec in needs_of(choice, f"trainer.evaluators[{i}]"):
            if not dep.required:
                continue
            if dep.name not in EVALUATOR_PROVIDES:
                yield (f"{where}: {spec.key}.build() needs {dep.name!r}; an evaluator can "
                       f"ask for {', '.join(EVALUATOR_PROVIDES)}")
            elif dep.name in ("tokenizer", "eval_dataset") and dep.name not in slots:
                yield (f"{where}: {spec.key} needs the recipe's {dep.name}, and the recipe "
                       f"has none: add a {dep.name} entry")


def model_satisfies_the_contract(recipe: Any) -> Iterator[str]:
    """The model component declares a class with every part of ``llm_gym.model_contract``
    (imported here: the contract needs torch, which loading the plugin does not)."""
    from llm_gym.model_contract import contract_problems

    return contract_problems(recipe)


def boundaries_need_a_model_that_masks_by_them(recipe: Any) -> Iterator[str]:
    """Document boundaries go to the model with every batch: a model with no
    ``attention_mask`` setting (a pretrained import, a custom model) cannot take them.
    (A model with the setting checks the pairing itself, in its own preflight.)"""
    model = getattr(recipe, "model", None)
    if model is None or "attention_mask" in type(model.config).model_fields:
        return
    for slot in ("train_dataset", "eval_dataset"):
        dataset = getattr(recipe, slot, None)
        if dataset is not None and getattr(dataset.config, "document_boundaries", False) is True:
            yield (f"{slot}.config.document_boundaries: true, but the model "
                   f"({model.type_hint.name}) takes no document boundaries (it has no "
                   f"attention_mask setting): set {slot}.config.document_boundaries=false")

