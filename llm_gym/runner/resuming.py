"""How a run continues from its checkpoint: decide (before anything is built), then honour
the changes that were allowed (after the optimizer and scheduler state are loaded).

Loading a checkpoint puts the optimizer's saved hyperparameters (the learning rate above
all) back into its parameter groups, and the scheduler's saved base rates back into the
scheduler: without ``honour_changes`` a changed lr would be recorded but not trained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from llm_gym.errors import UserError
from llm_gym.recipes.resolved import read_resolved, resolved_data
from llm_gym.runner.checkpoint import latest_checkpoint
from llm_gym.runner.resume_check import ResumePlan, check_resume
from llm_gym.runner.run_dir import check_layout, checkpoint_recipe


def plan_run(run_dir: Path, loaded: Any, resume: bool,
             allow_changes: tuple[str, ...] = ()) -> ResumePlan:
    """Where this run starts and what it changes; reads the run directory, writes nothing.
    A refused change, a tampered layout or a missing checkpoint under --resume raise."""
    check_layout(run_dir)
    max_steps = loaded.recipe.trainer.max_steps
    found = latest_checkpoint(run_dir)
    if found is None:
        if resume:
            raise UserError(f"--resume: no complete checkpoint under {run_dir}")
        return ResumePlan(max_steps=max_steps)
    step = int(found.name.split("_")[1])
    source = checkpoint_recipe(run_dir, step)
    return check_resume(read_resolved(source), resolved_data(loaded), step=step,
                        checkpoint=found, checkpoint_recipe=source,
                        allow_changes=allow_changes)


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings, without its parameters."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def scheduled_lrs(scheduler: Any) -> list[float] | None:
    """The rates ``scheduler``'s own schedule gives at its current step, from its (loaded)
    base rates; None for a scheduler without a closed form."""
    if isinstance(scheduler, LambdaLR):
        return [base * factor(scheduler.last_epoch)
                for factor, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)]
    closed_form = getattr(scheduler, "_get_closed_form_lr", None)
    return list(closed_form()) if closed_form is not None else None


def honour_changes(plan: ResumePlan, optimizer: torch.optim.Optimizer, scheduler: Any,
                   fresh: list[dict[str, Any]]) -> str | None:
    """After loading the checkpoint: put the allowed optimizer changes into the parameter
    groups (``fresh``: their settings as built from this run's recipe, before loading) and
    move the learning rate onto this run's schedule. Returns a warning when the learning
    rate or its schedule changed; with nothing changed, nothing is touched."""
    optimizer_changes = plan.changed("optimizer.config")
    schedule_changes = [*plan.changed("trainer.max_steps"), *plan.changed("scheduler")]
    if not (optimizer_changes or schedule_changes):
        return None
    groups = optimizer.param_groups
    before = [g["lr"] for g in groups]
    if optimizer_changes:
        for group, settings in zip(groups, fresh, strict=True):
            group.update({k: v for k, v in settings.items() if k not in ("lr", "initial_lr")})
    new_base = [s.get("initial_lr", s["lr"]) for s in fresh]
    lr_changed = bool(plan.changed("optimizer.config.lr"))
    if scheduler is None:
        if lr_changed:
            for group, base in zip(groups, new_base, strict=True):
                group["lr"] = base
    else:
        old_base = list(scheduler.base_lrs)
        if lr_changed:
            scheduler.base_lrs = new_base
            for group, base in zip(groups, new_base, strict=True):
                group["initial_lr"] = base
        now = scheduled_lrs(scheduler)
        if now is None and lr_changed:  # no closed form: scale the current rate
            now = [g["lr"] * new / old for g, new, old in zip(groups, new_base, old_base,
                                                                 strict=True)]
        for group, lr in zip(groups, now or before, strict=True):
            if not math.isclose(group["lr"], lr, rel_tol=1e-12):
                group["lr"] = lr
        scheduler._last_lr = [g["lr"] for g in groups]  # what get_last_lr() reports
    after = [g["lr"] for g in groups]
    lr_keys = [*plan.changed("optimizer.config.lr"), *schedule_changes]
    if not lr_keys or (not plan.changed("scheduler") and not lr_changed and after == before):
        return None
    first = plan.step + 1
    if after == before:
        effect = (f"step {first} still trains at lr {after[0]:.3e}; later steps follow the "
                  "new schedule")
    else:
        effect = (f"step {first} trains at lr {after[0]:.3e} where the checkpoint's "
                  f"schedule gave {before[0]:.3e}")
    advice = ""
    decay = plan.changed("scheduler.config.decay_steps")
    if plan.changed("trainer.max_steps") and decay:
        advice = (f"; to extend a run without changing its schedule, pin "
                  f"scheduler.config.decay_steps={decay[0].old} (docs/resuming.md)")
    return (f"warning: the learning rate changes on resume "
            f"({', '.join(str(c) for c in lr_keys)}): {effect}{advice}")
