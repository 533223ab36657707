"""The default logger: progress on stdout."""

from __future__ import annotations

from llm_gym.registry import ComponentConfig, component
from llm_gym.runner.progress import Progress
from llm_gym.runner.settings import TrainerSettings


@component("logger", "Console", version=1)
class ConsoleConfig(ComponentConfig):
    """A rich live panel on a terminal; one flushed plain line per record otherwise."""

    def build(self, trainer: TrainerSettings, start_step: int, title: str) -> Progress:
        return Progress(trainer.max_steps, start_step, title)
