"""``llm_gym eval``: one task on one checkpoint of a finished (or running) run, in one
process or several, its result added to ``RUN_DIR/eval/<step>.json``.

The file holds ``{"step", "checkpoint", "tasks": {name: {metric: value, ...}}}``; a task
evaluated again replaces its own entry and leaves the others, so one file gathers every
task run on that checkpoint. It is written atomically, into a real ``eval/`` directory
(a symbolic link there would make it write elsewhere).
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, describe_file_type, read_json_object
from llm_gym.recipes.resolved import RESOLVED_FILE
from llm_gym.run_layout import RunLayout
from llm_gym.runner.checkpoint import checkpoint_path
from llm_gym.runner.checkpoint_dirs import checkpoints_root, complete_checkpoints

EVAL_DIR = RunLayout.EVAL
# --task -> (evaluator, multiple-choice format): what the task's file holds.
TASKS = {
    "hellaswag": ("multiple_choice", "hellaswag"),
    "multiple-choice": ("multiple_choice", "auto"),
    "perplexity": ("perplexity", None),
}


@dataclass(frozen=True)
class OfflineResult:
    step: int
    checkpoint: Path
    task: str
    metrics: dict[str, Any]
    written: Path


def pick_checkpoint(run_dir: Path, step: int | None) -> tuple[int, Path]:
    """``(step, checkpoint)``: that step's complete checkpoint, or the newest; step 0 and
    the run directory itself for a run with none yet."""
    found = complete_checkpoints(checkpoints_root(run_dir))
    if not found and step in (None, 0):
        # A run started by `import hf` has the imported weights before any checkpoint
        # (load_run_model refuses a run whose model would have none).
        return 0, run_dir
    if step is None:
        return found[-1][0], found[-1][1]
    for have, path in found:
        if have == step:
            return have, path
    steps = ", ".join(str(s) for s, _ in found) or "none"
    raise UserError(f"{run_dir}: no complete checkpoint of step {step} "
                    f"({checkpoint_path(run_dir, step)}); complete ones: steps {steps}")


def evaluate_checkpoint(run_dir: Path, task: str, data: Path, *, step: int | None = None,
                        limit: int | None = None, name: str | None = None,
                        batch_size: int = 8, nproc: int = 1) -> OfflineResult:
    """Score ``data`` as ``task`` with the run's model at ``step`` (default: the newest
    checkpoint), over ``nproc`` local processes (the examples split among them), and add
    the result to ``RUN_DIR/eval/<step>.json``."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_FILE).is_file():
        raise UserError(f"{run_dir}: not a run directory (no {RESOLVED_FILE})")
    step, checkpoint = pick_checkpoint(run_dir, step)
    out = output_path(run_dir, step)
    _read_task(task, data, limit)  # a bad file is refused before any model is loaded
    args = (str(checkpoint), task, str(data), limit, batch_size)
    if nproc == 1:
        metrics = score_checkpoint(*args)
    else:
        from llm_gym.runner.launcher import launch_local

        metrics = launch_local(nproc, score_checkpoint, args)[0]
    metrics = {**metrics, "data": str(data), "limit": limit, "processes": nproc}
    name = name or task
    add_result(out, step, checkpoint, name, metrics)
    return OfflineResult(step, checkpoint, name, metrics, out)


def _read_task(task: str, data: Path, limit: int | None) -> Any:
    from llm_gym.evaluation.task_files import read_choice_examples, read_texts

    kind, fmt = TASKS[task]
    if kind == "multiple_choice":
        return read_choice_examples(Path(data), fmt, limit)
    return read_texts(Path(data), limit=limit)


def score_checkpoint(checkpoint: str, task: str, data: str, limit: int | None,
                     batch_size: int) -> dict[str, Any]:
    """One rank's part (every rank returns the reduced metrics): the whole model on each
    rank's device, the examples split across ranks. A module-level function, for the
    launcher's workers."""
    from llm_gym.evaluation.multiple_choice import MultipleChoice, encode_examples
    from llm_gym.evaluation.perplexity import TextPerplexity
    from llm_gym.runner.distributed import distributed_world
    from llm_gym.runner.loading_model import load_run_model

    items = _read_task(task, Path(data), limit)
    with distributed_world() as world:
        loaded = load_run_model(Path(checkpoint), device=world.device)
        if loaded.tokenizer is None:
            raise UserError(f"{checkpoint}: the run's recipe has no tokenizer to encode "
                            f"{data} with")
        evaluator: Any = (MultipleChoice(encode_examples(items, loaded.tokenizer), world)
                          if TASKS[task][0] == "multiple_choice"
                          else TextPerplexity(items, loaded.tokenizer, world, batch_size))
        started = time.perf_counter()
        metrics = evaluator.evaluate(loaded.model, lambda: False)
        return {**metrics, "seconds": time.perf_counter() - started}


def output_path(run_dir: Path, step: int) -> Path:
    """``RUN_DIR/eval/<step>.json``; refused (nothing written) where ``eval`` is not a
    directory."""
    directory = run_dir / EVAL_DIR
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return directory / f"{step}.json"
    if not stat.S_ISDIR(mode):
        raise UserError(f"{directory} is {describe_file_type(mode)}, not a directory: "
                        "remove or rename it; nothing was written")
    return directory / f"{step}.json"


def add_result(out: Path, step: int, checkpoint: Path, name: str,
                metrics: dict[str, Any]) -> None:
    """Put ``metrics`` under ``tasks[name]`` of ``out``, keeping the other tasks' entries
    (the lm-eval bridge adds its tasks to the same file)."""
    results: dict[str, Any] = {"step": step, "checkpoint": str(checkpoint), "tasks": {}}
    if out.exists() or out.is_symlink():
        results = read_json_object(out, what="the run's earlier evaluation results")
        if not isinstance(results.get("tasks"), dict):
            raise UserError(f"{out}: not an evaluation results file (no 'tasks' object); "
                            "move it away; nothing was written")
    results["tasks"][name] = metrics
    out.parent.mkdir(exist_ok=True)
    with atomic_output(out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write("\n")
