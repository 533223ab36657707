"""``llm_gym recipe run``: validate once, then train in this process or in N local workers.

Under ``torchrun`` (or ``srun torchrun``) every worker runs this same command with
``--nproc 1``; the process group is then taken from torchrun's environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from llm_gym.errors import UserError
from llm_gym.runner.run_job import RunJob


def run_recipe(
    spec: str,
    overrides: Sequence[str] = (),
    *,
    nproc: int = 1,
    run_dir: Path | None = None,
    resume: bool = False,
    allow_drift: bool = False,
    recipe_dirs: Sequence[Path] = (),
    allow_changes: Sequence[str] = (),
) -> dict:
    from llm_gym.cli.output import warn
    from llm_gym.recipes.loading import load_recipe
    from llm_gym.registry import ResolverRegistry

    # Validate before any worker starts: a bad recipe is reported once, not N times.
    registry = ResolverRegistry.from_installed_plugins()
    # preflight: what validate refuses (missing data, a too-small vocabulary, ...) is
    # refused here too, before any run directory or worker exists.
    loaded = load_recipe(spec, overrides, registry=registry, recipe_dirs=recipe_dirs,
                         allow_drift=allow_drift, preflight=True)
    for drift in loaded.drift:
        warn(f"running with a drifted pin: {drift}")
    under_launcher = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if under_launcher and nproc > 1:
        raise UserError(
            "--nproc starts local workers; under torchrun/srun leave it out "
            "(torchrun's --nproc-per-node decides)"
        )
    # A fixed global batch that does not split on this many ranks is refused before any
    # run directory or worker exists (the trainer derives the same layout again).
    # So is a mesh (trainer.parallel) that does not multiply out to the world size, and a
    # tensor-parallel degree the model has no plan for or whose heads it does not divide.
    from llm_gym.runner.batch_layout import batch_layout
    from llm_gym.runner.mesh import mesh_shape

    world_size = int(os.environ["WORLD_SIZE"]) if under_launcher else nproc
    shape = mesh_shape(loaded.recipe.trainer.parallel, world_size)
    batch_layout(loaded.recipe.trainer, shape.dp_size)
    if shape.tp > 1:  # the model's tensor-parallel plan fits the degree (built on meta)
        from llm_gym.runner.tensor_parallel import check_recipe_degree

        check_recipe_degree(registry, loaded.recipe, shape.tp)
    created = False
    if run_dir is None:
        from llm_gym.runner.run_dir import claim_default_run_dir, newest_run_dir

        name, version = loaded.ref.name, loaded.ref.version
        if resume:
            run_dir = newest_run_dir(name, version)
        elif under_launcher and os.environ["RANK"] != "0":
            run_dir = Path("runs") / f"{name}-v{version}-(rank 0 picks)"  # replaced by rank 0's
        else:
            run_dir, created = claim_default_run_dir(name, version), True
    job = RunJob(spec, tuple(overrides), Path(run_dir), resume, allow_drift, tuple(recipe_dirs),
                 tuple(allow_changes), created, loaded.portable())

    from llm_gym.runner.trainer import train_worker

    try:
        if nproc == 1:
            return train_worker(job, loaded, registry)
        from llm_gym.runner.launcher import launch_local

        return launch_local(nproc, train_worker, (job,), stop_hint=_stop_hint(job.run_dir))[0]
    except BaseException:
        if created:  # a run that never started leaves no empty directory behind
            with contextlib.suppress(OSError):
                job.run_dir.rmdir()
        raise


def _stop_hint(run_dir: Path) -> Callable[[], str]:
    """How to go on after workers were stopped before they could save (a signal while
    they were starting): resume from the run directory's checkpoint, or start again."""

    def hint() -> str:
        from llm_gym.runner.checkpoint import latest_checkpoint

        try:
            latest = latest_checkpoint(run_dir)
        except UserError as exc:  # a tampered run directory says what is wrong with it
            return exc.message
        if latest is not None:
            return (f"{run_dir} keeps the checkpoint {latest.name}; continue with the same "
                    f"command and --run-dir {run_dir} --resume")
        return (f"no checkpoint was written to {run_dir}, so there is nothing to resume; "
                f"start again with the same command and --run-dir {run_dir}")

    return hint
