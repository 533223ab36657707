"""Downstream evaluators (kind ``evaluator``), chosen by a recipe's ``trainer.evaluators``.

The logic is in ``llm_gym.evaluation``; these are its recipe entries. Each config has the
fields of ``EvaluatorConfig`` (``name``, ``every``, ``on_error``), which the trainer reads
to schedule it, and builds an object with ``evaluate(model, should_stop)``.
"""
