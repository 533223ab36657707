"""Plan a run before paying for it: memory per rank, FLOPs, communication, a dry run.

``memory`` is arithmetic on a model's shapes (no tensors); ``plan`` reads those shapes
off a meta-device model built from the recipe and adds FLOPs and throughput; ``dry_run``
builds and shards the model over a simulated world and traces one step; ``report``
renders it all for ``llm_gym recipe plan``.
"""
