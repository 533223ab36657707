"""``llm_gym eval``: one task on one checkpoint of a finished (or running) run, in one
process, its result added to ``RUN_DIR/eval/<step>.json``.

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

import torch

from llm_gym.errors import UserError
from llm_gym.fileio import atomic_output, describe_file_type, read_json_object
from llm_gym.recipes.resolved import RESOLVED_FILE
from llm_gym.runner.checkpoint import checkpoint_path
from llm_gym.runner.checkpoint_dirs import checkpoints_root, complete_checkpoints
from llm_gym.runner.distributed import World

EVAL_DIR = "eval"
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
                        batch_size: int = 8) -> OfflineResult:
    """Score ``data`` as ``task`` with the run's model at ``step`` (default: the newest
    checkpoint) and add the result to ``RUN_DIR/eval/<step>.json``."""
    from llm_gym.evaluation.multiple_choice import MultipleChoice, encode_examples
    from llm_gym.evaluation.perplexity import TextPerplexity
    from llm_gym.evaluation.task_files import read_choice_examples, read_texts
    from llm_gym.runner.loading_model import load_run_model

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_FILE).is_file():
        raise UserError(f"{run_dir}: not a run directory (no {RESOLVED_FILE}); pick a "
                        "checkpoint with --step")
    step, checkpoint = pick_checkpoint(run_dir, step)
    out = _output_path(run_dir, step)
    kind, fmt = TASKS[task]
    # The file first: a bad one is refused before the model is loaded.
    items: Any = (read_choice_examples(data, fmt, limit) if kind == "multiple_choice"
                  else read_texts(data, limit=limit))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_run_model(checkpoint, device=device)
    if loaded.tokenizer is None:
        raise UserError(f"{run_dir}: the run's recipe has no tokenizer to encode {data} with")
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device(device),
                  backend="none")
    evaluator: Any = (MultipleChoice(encode_examples(items, loaded.tokenizer), world)
                      if kind == "multiple_choice"
                      else TextPerplexity(items, loaded.tokenizer, world, batch_size))
    started = time.perf_counter()
    metrics = evaluator.evaluate(loaded.model, lambda: False)
    metrics = {**metrics, "seconds": time.perf_counter() - started, "data": str(data),
               "limit": limit}
    name = name or task
    _add_result(out, step, checkpoint, name, metrics)
    return OfflineResult(step, checkpoint, name, metrics, out)


def _output_path(run_dir: Path, step: int) -> Path:
    directory = run_dir / EVAL_DIR
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return directory / f"{step}.json"
    if not stat.S_ISDIR(mode):
        raise UserError(f"{directory} is {describe_file_type(mode)}, not a directory: "
                        "remove or rename it; nothing was written")
    return directory / f"{step}.json"


def _add_result(out: Path, step: int, checkpoint: Path, name: str,
                metrics: dict[str, Any]) -> None:
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
