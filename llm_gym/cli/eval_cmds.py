"""``llm_gym eval``: evaluate a checkpoint of a run on a local task file after training.
Heavy imports happen inside the command, so ``--help`` stays instant."""

from __future__ import annotations

from pathlib import Path

import click

from llm_gym.cli.params import BoundedInt

TASK_NAMES = ("hellaswag", "multiple-choice", "perplexity")  # llm_gym.evaluation.offline.TASKS


@click.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--task", required=True, type=click.Choice(TASK_NAMES),
              help="hellaswag: HellaSwag's JSONL (ctx, endings, label); multiple-choice: "
              "that or context/choices/answer; perplexity: JSONL texts (a 'text' field).")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="The task's local JSONL file (nothing is downloaded).")
@click.option("--step", type=BoundedInt(min=0, max=10**12), default=None,
              help="The checkpoint's step; default: the newest complete checkpoint.")
@click.option("--limit", type=BoundedInt(min=1, max=10**12), default=None,
              help="Score only the first K examples (lines).")
@click.option("--name", default=None, help="The result's key in the file (default: TASK).")
@click.option("--nproc", type=BoundedInt(min=1, max=1024), default=1, show_default=True,
              help="Local processes to split the examples across (one GPU each, if any).")
def eval_cmd(run_dir: Path, task: str, data: Path, step: int | None, limit: int | None,
             name: str | None, nproc: int) -> None:
    """Score RUN_DIR's model on a task; print a table and add it to RUN_DIR/eval/STEP.json.

    \b
    llm_gym eval runs/gpt2-124m --task hellaswag --data hellaswag_val.jsonl
    """
    from rich.table import Table

    from llm_gym.cli.output import out
    from llm_gym.evaluation.offline import evaluate_checkpoint

    result = evaluate_checkpoint(run_dir, task, data, step=step, limit=limit, name=name,
                                 nproc=nproc)
    table = Table(title=f"{result.task} at step {result.step}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        if key in ("data", "limit", "processes"):
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    out.print(table)
    out.print(f"wrote {result.written}", markup=False, highlight=False)
