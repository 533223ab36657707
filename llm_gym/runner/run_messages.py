"""What a run tells its user: where it goes, where it starts, and what to do next."""

from __future__ import annotations

import shlex
from pathlib import Path

from llm_gym.runner.resume_check import ResumePlan
from llm_gym.runner.run_job import RunJob


def start_message(run_dir: Path, plan: ResumePlan) -> str:
    if not plan.resumed:
        return f"run directory: {run_dir}\n  fresh start: steps 1 to {plan.max_steps}"
    changed = "".join(f"\n  changed: {c}" for c in plan.applied)
    return (f"run directory: {run_dir}\n  resuming from step {plan.step} ({plan.checkpoint}), "
            f"training to step {plan.max_steps}{changed}")


def nothing_left_message(run_dir: Path, plan: ResumePlan, job: RunJob, world_size: int) -> str:
    return (f"run directory: {run_dir}\n  nothing left to train: the checkpoint "
            f"{plan.checkpoint} is at step {plan.step} and trainer.max_steps is "
            f"{plan.max_steps}; nothing was written\n"
            + next_commands(run_dir, plan.step, job, world_size))


def end_message(run_dir: Path, step: int, job: RunJob, world_size: int,
                data_ran_out: bool = False) -> str:
    return (f"run directory: {run_dir} (trained to step {step})\n"
            + next_commands(run_dir, step, job, world_size, data_ran_out))


def next_commands(run_dir: Path, step: int, job: RunJob, world_size: int,
                  data_ran_out: bool = False) -> str:
    """The commands that continue, plot, sample and export the run (no continuing a run
    whose training data ran out: a resume would stop at once)."""
    d = shlex.quote(str(run_dir))
    kept = [o for o in job.overrides if not o.startswith("trainer.max_steps=")]
    dirs = [a for r in job.recipe_dirs for a in ("--recipe-dir", str(r))]
    drift = ["--allow-drift"] if job.allow_drift else []
    cont = shlex.join(["llm_gym", "recipe", "run", job.spec, *kept, *dirs, *drift])
    same = f" (on {world_size} processes again)" if world_size > 1 else ""
    cont = f"  continue: {cont} --run-dir {d} --resume trainer.max_steps={2 * step}{same}\n"
    if data_ran_out:
        cont = "  continue: nothing more to train on: the training data ran out\n"
    return (cont + f"  plot:     llm_gym plot {d}\n"
            f"  sample:   llm_gym generate {d} --prompt 'The'\n"
            f"  export:   llm_gym export hf {d} OUT_DIR")
