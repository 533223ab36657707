"""Metric subscribers (kind ``logger``), chosen by a recipe's ``trainer.loggers`` list.

Each builds an object with ``log_train(record)``, ``log_eval(record)`` and ``close()``
(``llm_gym.runner.metrics.MetricsSubscriber``); rank 0 alone builds them. Optional
packages are imported inside ``build``, so the registry loads without them.
"""
