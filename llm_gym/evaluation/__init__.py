"""Downstream evaluation during training and after it: the logic behind the evaluator
components (``components/evaluators/``), with no registry in it.

- ``evaluator.py``: what an evaluator is to the trainer, and the schedule that runs them;
- ``task_files.py``: reading multiple-choice and text JSONL files, errors by file and line;
- ``sharding.py``: examples split across data-parallel ranks, counts summed back;
- ``scoring.py``: batched log-probabilities of continuations given contexts;
- ``multiple_choice.py``, ``perplexity.py``, ``validation_loss.py``: the evaluators.
"""
