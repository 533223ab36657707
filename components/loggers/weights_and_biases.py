"""Weights & Biases, offline by default (extra: ``llm_gym[wandb]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llm_gym.errors import UserError
from llm_gym.recipes.resolved import RESOLVED_FILE, read_resolved
from llm_gym.registry import ComponentConfig, component

EVALUATOR_PREFIX = "eval/"  # llm_gym.evaluation.evaluator.metric_key


@component("logger", "WandB", version=1)
class WandBConfig(ComponentConfig):
    """A W&B run under RUN_DIR/wandb; offline: upload later with `wandb sync`."""

    project: str = Field("llm_gym", min_length=1, description="W&B project")
    name: str | None = Field(None, description="run name; default: the run directory's name")
    mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="offline writes locally only; online needs `wandb login`"
    )

    def build(self, run_dir: Path, start_step: int) -> WandBLogger:
        try:
            import wandb
        except ImportError as exc:
            raise UserError(
                f"the WandB logger needs the wandb package ({exc}); "
                "pip install 'llm_gym[wandb]', or drop it from trainer.loggers"
            ) from None
        run_dir = Path(run_dir)
        resolved = run_dir / RESOLVED_FILE  # rank 0 wrote it before the loggers
        config = read_resolved(resolved) if resolved.exists() else {}
        run = wandb.init(project=self.project, name=self.name or run_dir.name, dir=str(run_dir),
                         mode=self.mode, config={**config, "start_step": start_step})
        return WandBLogger(run)


class WandBLogger:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log_train(self, record: dict[str, Any]) -> None:
        self._log(record, "train")

    def log_eval(self, record: dict[str, Any]) -> None:
        self._log(record, "eval")

    def close(self) -> None:
        self.run.finish()

    def _log(self, record: dict[str, Any], group: str) -> None:
        values = {_key(k, group): v for k, v in record.items() if k != "step" and v is not None}
        self.run.log(values, step=record["step"])


def _key(key: str, group: str) -> str:
    """``train/loss``, ``eval/loss`` (from ``eval_loss``); an evaluator's record keeps its
    key, already ``eval/<name>/<metric>`` (prefixing it would make ``eval/eval/...``)."""
    if key.startswith(EVALUATOR_PREFIX):
        return key
    return f"{group}/{key.removeprefix('eval_')}"
