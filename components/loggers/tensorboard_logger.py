"""TensorBoard event files under the run directory (extra: ``llm_gym[tensorboard]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from llm_gym.errors import UserError
from llm_gym.registry import ComponentConfig, component

# metrics.jsonl key -> TensorBoard tag; grouped so the dashboard shows two sections.
TRAIN_TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
              "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu",
              "data_wait_pct": "perf/data_wait_pct",
              # peak memory per logging interval (llm_gym/runner/memory_telemetry.py)
              **{key: key for key in ("mem/cuda_peak_allocated_gib", "mem/cuda_peak_reserved_gib",
                                      "mem/peak_rss_mib", "mem/rss_mib")}}
EVAL_TAGS = {"eval_loss": "eval/loss", "eval_perplexity": "eval/perplexity"}
EVALUATOR_PREFIX = "eval/"  # llm_gym.evaluation.evaluator.metric_key


@component("logger", "TensorBoard", version=1)
class TensorBoardConfig(ComponentConfig):
    """Scalars for TensorBoard: train loss, lr, grad norm, throughput, eval loss and the
    evaluators' metrics."""

    subdir: str = Field("tensorboard", min_length=1, description="event files go to RUN_DIR/subdir")
    flush_secs: PositiveInt = Field(30, description="seconds between writes to disk")

    def build(self, run_dir: Path, start_step: int) -> TensorBoardLogger:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise UserError(
                f"the TensorBoard logger needs the tensorboard package ({exc}); "
                "pip install 'llm_gym[tensorboard]', or drop it from trainer.loggers"
            ) from None
        # On resume, events past the checkpoint's step came from the interrupted run and
        # are written again: purge them, as metrics.jsonl drops those records.
        writer = SummaryWriter(str(Path(run_dir) / self.subdir), flush_secs=self.flush_secs,
                               purge_step=start_step + 1 if start_step else None)
        return TensorBoardLogger(writer)


class TensorBoardLogger:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log_train(self, record: dict[str, Any]) -> None:
        self._add(record, TRAIN_TAGS)
        for source, tokens in (record.get("tokens_by_source") or {}).items():
            self.writer.add_scalar(f"data/tokens/{source}", tokens, record["step"])
        if record.get("tokens"):
            # Runs at different batch sizes compare by tokens seen, not by steps.
            self.writer.add_scalar("train/loss_vs_tokens", record["loss"], record["tokens"])

    def log_eval(self, record: dict[str, Any]) -> None:
        self._add(record, EVAL_TAGS)
        # An evaluator's record (eval/<name>/<metric>, eval/<name>/seconds): its keys are
        # already tags, one dashboard section per evaluator's metric beside eval/loss.
        for key, value in record.items():
            if key.startswith(EVALUATOR_PREFIX) and value is not None:
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()

    def _add(self, record: dict[str, Any], tags: dict[str, str]) -> None:
        for key, tag in tags.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])
