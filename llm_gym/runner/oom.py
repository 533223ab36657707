"""A CUDA out-of-memory during a step: a memory snapshot, and a message that says what
``recipe plan`` expected.

With ``trainer.memory_snapshot_on_oom`` (the default) a CUDA run records its allocations
from the start (``torch.cuda.memory._record_memory_history``, a ring of the last 100,000
events with Python stacks), so the snapshot written at the failure shows which tensors
filled the device and where they were made. Rank 0 writes
``RUN_DIR/profile/oom-snapshot.pickle``, rank R ``oom-snapshot-rank<R>.pickle``; drag one
onto https://pytorch.org/memory_viz. On a CPU there is nothing to record and nothing runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llm_gym.recipes.loading import LoadedRecipe
from llm_gym.recipes.resolved import RESOLVED_FILE
from llm_gym.run_layout import RunLayout

MAX_ENTRIES = 100_000


def snapshot_path(run_dir: Path, rank: int) -> Path:
    return RunLayout(run_dir).oom_snapshot(rank)


class OomRecorder:
    """Records allocation history on CUDA; ``snapshot()`` writes it after an OOM."""

    def __init__(self, enabled: bool, run_dir: Path, rank: int, device: torch.device) -> None:
        self.path = snapshot_path(run_dir, rank)
        self.recording = enabled and device.type == "cuda"
        if self.recording:
            # Python stacks only: unwinding C++ frames at every allocation ("all", the
            # default) costs far more and names frames a user cannot act on.
            torch.cuda.memory._record_memory_history(stacks="python", max_entries=MAX_ENTRIES)

    def snapshot(self) -> Path | None:
        """Write the snapshot; None when nothing was recorded or it could not be written
        (the out-of-memory error is what matters then, not this)."""
        if not self.recording:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.cuda.memory._dump_snapshot(str(self.path))
        except (OSError, RuntimeError):
            return None
        return self.path

    def close(self) -> None:
        if self.recording:
            torch.cuda.memory._record_memory_history(enabled=None)
            self.recording = False


def oom_message(step: int, error: BaseException, snapshot: Path | None,
                loaded: LoadedRecipe, world_size: int, run_dir: Path) -> str:
    """What failed, where the snapshot is, and the planner's peak for the same layout."""
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    where = (f"the memory snapshot is {snapshot} (open it at https://pytorch.org/memory_viz)"
             if snapshot is not None else
             "no memory snapshot was written (trainer.memory_snapshot_on_oom is off, or "
             "writing it failed)")
    return (f"step {step}: CUDA ran out of memory ({cause}); {where}; "
            f"{predicted_peak(loaded, world_size, run_dir)}. Lower trainer.micro_batch_size (raise "
            "grad_accumulation to keep the batch), or turn on activation_checkpointing")


def predicted_peak(loaded: LoadedRecipe, world_size: int, run_dir: Path) -> str:
    """``recipe plan``'s peak per GPU for this recipe on ``world_size`` GPUs, or the command
    that computes it when the plan cannot be made here."""
    # The run's resolved recipe has the command line's overrides in it; the recipe file not.
    resolved = run_dir / RESOLVED_FILE
    recipe = resolved if resolved.is_file() else loaded.ref.path
    command = f"`llm_gym recipe plan {recipe} --nodes 1 --gpus-per-node {world_size}`"
    try:
        from llm_gym.planning.plan import make_plan

        plan = make_plan(loaded.recipe, label=loaded.ref.label, nodes=1,
                         gpus_per_node=world_size)
        peak = plan.memory().peak
    except Exception as exc:  # the plan is advice; its failure must not hide the OOM
        return f"the plan could not be made here ({type(exc).__name__}: {exc}); run {command}"
    return (f"recipe plan predicted a peak of {peak / (1 << 30):.2f} GiB per GPU on "
            f"{world_size} GPU(s) ({command} shows the breakdown)")
