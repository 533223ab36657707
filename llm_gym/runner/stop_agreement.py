"""Ranks agreeing to stop together, checked every step without stalling any of them.

Ctrl-C or SIGTERM reaches the ranks of a run at different steps, but they must stop at
the same one (the checkpoint is a collective). Each step every rank puts its own request
into an all-reduce (MAX) started asynchronously on a CPU (gloo) group of its own, and
reads the result one step later, when it has long arrived: all ranks read the same
value at the same step, so they stop together, at most two steps after the signal.
Nothing touches the GPU stream and nothing waits for a logging step, so a run with slow
steps still stops well inside the launcher's grace period (30 s under torchrun).

The same all-reduce carries a second flag: "my checkpoint written in the background
failed" (async_checkpoint.py). ``save_failed`` turns True on every rank at the same call,
so the ranks stop together there too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from llm_gym.runner.distributed import World


class StopAgreement:
    def __init__(self, world: World) -> None:
        """Collective with more than one rank: every rank must construct it together."""
        self.world_size = world.world_size
        # A group of its own: its all-reduces never queue behind FSDP's collectives.
        self._group = dist.new_group(backend="gloo") if self.world_size > 1 else None
        self._flag = torch.zeros(2)
        self._pending: dist.Work | None = None
        self._save_failed_here: Callable[[], bool] = lambda: False
        self.save_failed = False  # once True, it stays True

    def watch_saves(self, failed: Callable[[], bool]) -> None:
        """Agree on ``failed()`` (this rank's background save failed) with every step."""
        self._save_failed_here = failed

    def agreed(self, requested: bool) -> bool:
        """Called by every rank once per step with its own request; True on every rank at
        the same call once any rank's request has been seen (one call later)."""
        if self.world_size == 1:
            self.save_failed = self.save_failed or self._save_failed_here()
            return requested
        stop = False
        if self._pending is not None:
            self._pending.wait()
            stop, failed = (bool(x) for x in self._flag.tolist())  # CPU: no device sync
            self.save_failed = self.save_failed or failed
        self._flag = torch.tensor([float(requested), float(self._save_failed_here())])
        self._pending = dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group,
                                        async_op=True)
        return stop

    def finish(self) -> None:
        """Wait for the last all-reduce; call on every rank before the group goes away
        (not after a failure, when a peer may never take part in it)."""
        if self._pending is not None:
            self._pending.wait()
            self._pending = None
