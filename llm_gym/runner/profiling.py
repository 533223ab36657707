"""``trainer.profile``: a torch.profiler trace of a few chosen optimizer steps.

Every rank writes its own trace, ``RUN_DIR/profile/rank<R>.pt.trace.json`` (Chrome trace
JSON: Perfetto's ui.perfetto.dev, chrome://tracing and TensorBoard's profiler plugin read
it): the step that stalls a multi-rank run is often one rank waiting for another, which a
rank-0-only trace cannot show. The profiler runs with ``with_stack`` so the trace names the
model's modules (``nn.Module: Block_1``, by class and index), and the trainer marks its phases with
``llm_gym/data``, ``llm_gym/forward_backward`` and ``llm_gym/optimizer`` ranges.

Outside the profiled steps nothing is recorded and ``phase`` is a no-op context, so an
unprofiled run pays nothing. Profiling reads what happens and changes no arithmetic: the
losses are bitwise those of the same run without it (tests/runner/test_profiling.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from llm_gym.run_layout import RunLayout
from llm_gym.runner.settings import ProfileSettings

PROFILE_DIR = RunLayout.PROFILE
PHASES = ("data", "forward_backward", "optimizer")


def trace_path(run_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` writes its trace."""
    return RunLayout(run_dir).profile_trace(rank)


class StepProfiler:
    """Starts torch.profiler before step ``start_step`` and writes the trace after step
    ``start_step + steps - 1`` (or when the run ends first, with the steps it saw)."""

    def __init__(self, settings: ProfileSettings | None, run_dir: Path, rank: int,
                 device: torch.device) -> None:
        self.settings, self.path, self.device = settings, trace_path(run_dir, rank), device
        self._profiler: profile | None = None
        self.written: Path | None = None

    @property
    def active(self) -> bool:
        return self._profiler is not None

    def missed(self, start: int) -> str | None:
        """A note when a run resumed at step ``start`` is past the profiled steps."""
        if self.settings is None or start < self.settings.start_step:
            return None
        return (f"note: trainer.profile starts at step {self.settings.start_step} but the run "
                f"resumes after step {start}: nothing is profiled; set a later start_step")

    def begin_step(self, step: int) -> None:
        """Called before step ``step`` (1-based) runs."""
        if self.settings is None or step != self.settings.start_step:
            return
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(activities=activities, with_stack=True)
        self._profiler.start()

    def end_step(self, step: int) -> None:
        """Called after step ``step`` finished; the last profiled one writes the trace."""
        if self.active and step >= self.settings.start_step + self.settings.steps - 1:
            self.finish()

    def finish(self) -> Path | None:
        """Stop and write the trace if one is being recorded; safe to call again."""
        prof, self._profiler = self._profiler, None
        if prof is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels still queued belong in the trace
        prof.stop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.path))
        self.written = self.path
        return self.path

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A named range in the trace while profiling; nothing otherwise."""
        if self._profiler is None:
            return contextlib.nullcontext()
        return _range(f"llm_gym/{name}")


@contextlib.contextmanager
def _range(name: str) -> Iterator[None]:
    with record_function(name):
        yield
