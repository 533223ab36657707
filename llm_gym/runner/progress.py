"""What rank 0 shows while training: a rich live panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

# The keys of evaluator records (llm_gym.evaluation.evaluator.metric_key).
EVALUATOR_PREFIX = "eval/"


class Progress:
    """A metrics subscriber (the ``Console`` logger builds it; only rank 0 does).

    The live panel starts when this is built and stops at ``close()``; ``message`` prints
    above it (printing around a live display directly would tear it).
    """

    def __init__(self, total_steps: int, start_step: int, title: str) -> None:
        self.total, self.start, self.title = total_steps, start_step, title
        # User text (prompts, run titles, paths) is printed as typed: no markup, no emoji.
        self.console = Console(file=sys.stdout, soft_wrap=True, markup=False, emoji=False)
        self.live_mode = self.console.is_terminal
        self._started = time.perf_counter()
        self._live: Live | None = None
        self._last: dict[str, Any] = {}
        if self.live_mode:
            self._live = Live(
                self._render(), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.__enter__()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def log_train(self, record: dict[str, Any]) -> None:
        self._show(record)

    def log_eval(self, record: dict[str, Any]) -> None:
        self._show(record)

    def _show(self, record: dict[str, Any]) -> None:
        if self._live is not None:
            # The panel keeps the latest of everything, so the eval loss stays in view.
            self._last = {**self._last, **record}
            self._live.update(self._render())
        else:
            self.console.print(
                _plain_line(record, self.total, self._eta(record["step"])),
                markup=False,
                highlight=False,
            )
            self.console.file.flush()  # someone may be following a log file

    def _eta(self, step: int) -> float | None:
        done = step - self.start
        if done <= 0:
            return None
        return (time.perf_counter() - self._started) / done * (self.total - step)

    def _render(self) -> Table:
        table = Table(title=self.title, box=None, show_header=False, pad_edge=False)
        rec = self._last
        step = rec.get("step", self.start)
        table.add_row("step", f"{step}/{self.total}")
        for key, label in (
            ("loss", "loss"),
            ("lr", "lr"),
            ("grad_norm", "grad norm"),
            ("tokens_per_s", "tokens/s"),
            ("mfu", "MFU"),
            ("eval_loss", "eval loss"),
            ("mem/peak_rss_mib", "peak RSS"),
            ("mem/cuda_peak_allocated_gib", "CUDA allocated"),
            ("mem/cuda_peak_reserved_gib", "CUDA reserved"),
        ):
            if rec.get(key) is not None:
                table.add_row(label, _format(key, rec[key]))
        for key, value in _evaluator_values(rec):
            table.add_row(key, _format(key, value))
        eta = self._eta(step)
        if eta is not None:
            table.add_row("ETA", _duration(eta))
        return table


def _evaluator_values(rec: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in rec.items() if k.startswith(EVALUATOR_PREFIX) and v is not None]


def _plain_line(rec: dict[str, Any], total: int, eta: float | None) -> str:
    parts = [f"step {rec['step']}/{total}"]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "eval_loss", "eval_perplexity",
                "mem/peak_rss_mib", "mem/cuda_peak_allocated_gib", "mem/cuda_peak_reserved_gib"):
        if rec.get(key) is not None:
            parts.append(f"{key} {_format(key, rec[key])}")
    # An evaluator's record: eval/<name>/<metric>, and what the call cost, in its order.
    parts.extend(f"{key} {_format(key, value)}" for key, value in _evaluator_values(rec))
    if eta is not None:
        parts.append(f"eta {_duration(eta)}")
    return " | ".join(parts)


def _format(key: str, value: float) -> str:
    if key.startswith(EVALUATOR_PREFIX):
        if isinstance(value, int):  # counts: examples, tokens, truncated
            return str(value)
        if key.endswith("/seconds"):
            return f"{value:.2f}s"
    if key == "mfu":
        return f"{100 * value:.1f}%"
    if key == "tokens_per_s":
        return f"{value:,.0f}"
    if key == "eval_perplexity":
        return f"{value:.2f}"
    if key.endswith("_mib"):
        return f"{value:,.0f} MiB"
    if key.endswith("_gib"):
        return f"{value:.2f} GiB"
    if key == "lr":
        return f"{value:.2e}"
    return f"{value:.4f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
