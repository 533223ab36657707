"""``llm_gym eval``: evaluate a checkpoint of a run on a local task file after training, or
on lm-evaluation-harness tasks through the bridge (``--lm-eval``). Heavy imports happen
inside the command, so ``--help`` stays instant and lm-eval is imported only when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llm_gym.cli.params import BoundedInt, bad_parameter

TASK_NAMES = ("hellaswag", "multiple-choice", "perplexity")  # llm_gym.evaluation.offline.TASKS


@click.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="hellaswag: HellaSwag's JSONL (ctx, endings, label); multiple-choice: "
              "that or context/choices/answer; perplexity: JSONL texts (a 'text' field).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="The --task's local JSONL file (nothing is downloaded).")
@click.option("--lm-eval", "lm_eval_tasks", default=None, metavar="TASKS",
              help="lm-evaluation-harness tasks (comma-separated names, globs allowed) "
              "instead of --task; needs pip install 'llm_gym[eval]'.")
@click.option("--include-path", multiple=True, type=click.Path(path_type=Path),
              help="A directory of lm-eval task YAMLs (local data files); repeatable.")
@click.option("--step", type=BoundedInt(min=0, max=10**12), default=None,
              help="The checkpoint's step; default: the newest complete checkpoint.")
@click.option("--limit", type=BoundedInt(min=1, max=10**12), default=None,
              help="Score only the first K examples (lines; with --lm-eval, per task).")
@click.option("--batch-size", type=BoundedInt(min=1, max=65536), default=8,
              show_default=True, help="Sequences per forward pass.")
@click.option("--name", default=None, help="The --task result's key in the file "
              "(default: TASK).")
@click.option("--nproc", type=BoundedInt(min=1, max=1024), default=1, show_default=True,
              help="Local processes to split the --task examples across (one GPU each).")
def eval_cmd(run_dir: Path, task: str | None, data: Path | None, lm_eval_tasks: str | None,
             include_path: tuple[Path, ...], step: int | None, limit: int | None,
             batch_size: int, name: str | None, nproc: int) -> None:
    """Score RUN_DIR's model on a task; print a table and add it to RUN_DIR/eval/STEP.json.

    \b
    llm_gym eval runs/gpt2-124m --task hellaswag --data hellaswag_val.jsonl
    llm_gym eval runs/gpt2-124m --lm-eval my_hellaswag --include-path tasks/
    """
    if (task is None) == (lm_eval_tasks is None):
        raise click.UsageError("give either --task (with --data) or --lm-eval TASKS")
    if lm_eval_tasks is not None:
        for flag, given in (("--data", data), ("--name", name), ("--nproc", nproc != 1)):
            if given:
                raise bad_parameter(flag, "is for --task; --lm-eval tasks name their own "
                                    "data and run in one process")
        _lm_eval(run_dir, lm_eval_tasks, include_path, step, limit, batch_size)
        return
    if data is None:
        raise bad_parameter("--data", "--task needs the task's local file")
    if include_path:
        raise bad_parameter("--include-path", "is for --lm-eval tasks")
    from llm_gym.evaluation.offline import evaluate_checkpoint

    result = evaluate_checkpoint(run_dir, task, data, step=step, limit=limit, name=name,
                                 batch_size=batch_size, nproc=nproc)
    rows = [(k, v) for k, v in result.metrics.items() if k not in ("data", "limit", "processes")]
    _print_table(f"{result.task} at step {result.step}", ["metric", "value"], rows)
    _print_written(result.written)


def _lm_eval(run_dir: Path, tasks: str, include_path: tuple[Path, ...], step: int | None,
             limit: int | None, batch_size: int) -> None:
    from llm_gym.evaluation.lm_eval_run import evaluate_lm_eval

    result = evaluate_lm_eval(run_dir, [tasks], include_path=include_path, step=step,
                              limit=limit, batch_size=batch_size)
    rows = [(f"{task} {metric}", value) for task, metrics in result.tasks.items()
            for metric, value in metrics.items() if metric not in ("limit",)]
    _print_table(f"lm-eval at step {result.step}", ["task metric", "value"], rows)
    _print_written(result.written)


def _print_table(title: str, columns: list[str], rows: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    from llm_gym.cli.output import out

    table = Table(title=title, show_header=True)
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


def _print_written(path: Path) -> None:
    from llm_gym.cli.output import out

    out.print(f"wrote {path}", markup=False, highlight=False)
