"""The trained run the evaluation tests share: gpt2-debug with both evaluators."""

from __future__ import annotations

import pytest

from llm_gym.runner.entry import run_recipe
from llm_gym.runner.metrics import read_metrics
from tests.evaluation.task_data import evaluators_override, write_hellaswag, write_texts

EXAMPLES, TEXTS = 24, 10


def cli(capsys, *args: str) -> tuple[int, str]:
    """``llm_gym ARGS`` in this process: its exit code and what it printed."""
    from llm_gym.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out = capsys.readouterr()
    return exited.value.code, out.out + out.err


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval-run")
    hellaswag = write_hellaswag(root / "hellaswag_val.jsonl", EXAMPLES, long_contexts=2)
    texts = write_texts(root / "texts.jsonl", TEXTS)
    run_dir = root / "run"
    # ValidationLoss as an evaluator too, with the recipe's eval_every settings.
    validation = "{type_hint: ValidationLoss, config: {every: 4, batches: 2}}"
    run_recipe("gpt2-debug", [evaluators_override(hellaswag, texts, 4, validation),
                              "trainer.loggers=[]"], run_dir=run_dir)
    return {"run_dir": run_dir, "hellaswag": hellaswag, "texts": texts,
            "records": read_metrics(run_dir / "metrics.jsonl")}


