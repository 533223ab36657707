"""``llm_gym eval RUN_DIR --lm-eval TASKS``: lm-evaluation-harness tasks on a checkpoint,
through the bridge (``lm_eval_bridge.LLMGymLM``), the results added to
``RUN_DIR/eval/<step>.json`` beside those of ``--task``, each under ``lm-eval/<task>``.

lm-eval is an optional extra (``pip install 'llm_gym[eval]'``), imported only here and only
when asked for. Tasks come from ``--include-path`` directories (task YAMLs whose data are
local files: nothing is downloaded) and from the harness's own catalogue; the local
directories are searched alone first, because indexing the catalogue's 14,000 task files
takes seconds to tens of seconds and a local task does not need it.
"""

from __future__ import annotations

import difflib
import importlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_gym.errors import UserError
from llm_gym.evaluation.offline import add_result, output_path, pick_checkpoint
from llm_gym.recipes.resolved import RESOLVED_FILE

INSTALL_HINT = "pip install 'llm_gym[eval]'"
RESULT_PREFIX = "lm-eval/"  # the file's key of a harness task: lm-eval/<task>
# Entries of a task's lm-eval results that are not metrics ("sample_len" repeats the
# examples scored, kept as "samples").
NOT_METRICS = frozenset({"name", "alias", "sample_len"})


@dataclass(frozen=True)
class LmEvalResult:
    step: int
    checkpoint: Path
    # task -> {metric: value}: lm-eval's metrics ("acc", "acc_stderr", "acc_norm", ...;
    # "exact_match,strict-match" where a filter other than "none" made them), the
    # examples scored ("samples"), the requests and those cut from the left to fit the
    # model ("requests", "truncated"), the limit and the seconds the task took.
    tasks: dict[str, dict[str, Any]]
    written: Path
    # task (or group) asked for -> lm-eval's own results of its call (with the samples
    # where log_samples was asked for)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def require_lm_eval() -> None:
    """A UserError naming the extra when lm-evaluation-harness is not installed."""
    try:
        importlib.import_module("lm_eval")
    except ImportError as exc:
        raise UserError(f"--lm-eval needs lm-evaluation-harness, which is not installed "
                        f"({exc}): {INSTALL_HINT}") from None


def evaluate_lm_eval(run_dir: Path, tasks: Sequence[str], *,
                     include_path: Sequence[Path] = (), step: int | None = None,
                     limit: int | None = None, batch_size: int = 8,
                     log_samples: bool = False) -> LmEvalResult:
    """Run the harness tasks ``tasks`` on the run's checkpoint at ``step`` (default: the
    newest) and add their metrics to ``RUN_DIR/eval/<step>.json``."""
    run_dir = Path(run_dir)
    if not (run_dir / RESOLVED_FILE).is_file():
        raise UserError(f"{run_dir}: not a run directory (no {RESOLVED_FILE})")
    step, checkpoint = pick_checkpoint(run_dir, step)
    out = output_path(run_dir, step)
    names = [t.strip() for name in tasks for t in name.split(",") if t.strip()]
    if not names:
        raise UserError("--lm-eval: no task names given (a comma-separated list)")
    for directory in include_path:
        if not Path(directory).is_dir():
            raise UserError(f"--include-path {directory}: not a directory of task YAML files")
    require_lm_eval()
    manager = task_manager(names, [Path(p) for p in include_path])
    loaded = load_tasks(manager, names)

    from lm_eval.evaluator import simple_evaluate

    from llm_gym.evaluation.lm_eval_bridge import LLMGymLM
    from llm_gym.runner.loading_model import load_run_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = load_run_model(checkpoint, device=device)
    if run.tokenizer is None:
        raise UserError(f"{checkpoint}: the run's recipe has no tokenizer to encode the "
                        "tasks' text with")
    lm = LLMGymLM(run.model, run.tokenizer, device, batch_size=batch_size)
    results: dict[str, dict[str, Any]] = {}
    raws: dict[str, Any] = {}
    for item in loaded:
        # One harness call per task (or group), so each entry gets its own request counts
        # and time.
        lm.counts = dict.fromkeys(lm.counts, 0)
        started = time.perf_counter()
        raw = simple_evaluate(model=lm, tasks=[item], task_manager=manager, limit=limit,
                              log_samples=log_samples)
        seconds = time.perf_counter() - started
        for name, metrics in task_metrics(raw).items():
            results[name] = {**metrics, **lm.counts, "limit": limit, "seconds": seconds}
            add_result(out, step, checkpoint, RESULT_PREFIX + name, results[name])
        raws[_item_name(item)] = raw
    return LmEvalResult(step, checkpoint, results, out, raws)


def _item_name(item: Any) -> str:
    from lm_eval.api.group import Group

    return item.name if isinstance(item, Group) else item.task_name


def task_manager(names: Sequence[str], include_path: Sequence[Path]) -> Any:
    """The harness's task index: the local directories alone where they hold every task
    asked for, with the harness's catalogue otherwise. An unknown name is refused here,
    with the closest names, before any model is loaded."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=[str(p) for p in include_path],
                            include_defaults=False)
        if not _unknown(local, names):
            return local
    manager = TaskManager(include_path=[str(p) for p in include_path] or None)
    unknown = _unknown(manager, names)
    if unknown:
        searched = ", ".join(str(p) for p in include_path)
        where = f"in {searched} or " if include_path else ""
        problems = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            problems.append(f"{name}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise UserError(f"--lm-eval: no task named {', '.join(unknown)} {where}in "
                        "lm-evaluation-harness's tasks (a local task needs --include-path "
                        "DIR, the directory of its YAML file)", problems)
    return manager


def _unknown(manager: Any, names: Sequence[str]) -> list[str]:
    return [name for name in names if not manager.match_tasks([name])]


def load_tasks(manager: Any, names: Sequence[str]) -> list[Any]:
    """The tasks (or groups) built, their documents read, so that a task file that does
    not load (a data file missing, a field its template names absent) is a UserError
    naming the task rather than a traceback from inside the harness."""
    built: list[Any] = []
    for pattern in names:
        for name in manager.match_tasks([pattern]):
            try:
                loaded = manager.load([name])
            except Exception as exc:  # the harness and datasets raise many kinds
                raise UserError(f"--lm-eval: task {name} does not load: "
                                f"{type(exc).__name__}: {exc}") from None
            groups = loaded["groups"]
            built.extend([groups[name]] if name in groups else loaded["tasks"].values())
    return built


def task_metrics(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric: value}}`` from lm-eval's results: ``acc,none`` read as ``acc``
    (other filters keep their name), what is not a metric (the name, the alias, a stderr
    the harness did not compute) dropped, the examples scored added."""
    samples = raw.get("n-samples", {})
    tasks: dict[str, dict[str, Any]] = {}
    for task, values in raw["results"].items():
        metrics: dict[str, Any] = {}
        for key, value in values.items():
            if key in NOT_METRICS or value == "N/A":
                continue
            metrics[key.removesuffix(",none")] = value
        if task in samples:
            metrics["samples"] = samples[task].get("effective")
        tasks[task] = metrics
    return tasks
