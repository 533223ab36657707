"""Checkpoints written beside training (``trainer.async_checkpoint``).

Between two steps the trainer takes a snapshot of the step (checkpoint.take_snapshot:
this rank's state file, serialised, and the DCP state of model and optimizer) and copies
its tensors to host memory (DCP's ``BlockingAsyncStager``); training then goes on while a
thread of its own writes that copy with the very code of a synchronous save
(checkpoint.write_checkpoint): the same temporary directory, digests, marker written last
and rename. So the guarantees are the same: a crash or a kill -9 at any moment leaves
the newest complete checkpoint intact, and a partial one is a ``.tmp`` directory that
nothing reads and the next save removes.

The writer's collectives (DCP's planning, the agreements between phases, the digests)
run over a gloo group made for it, never over the group training uses: two threads may
not share a group, and NCCL's stream would serialise them anyway.

At most one save is in flight: the next one, the end of the run and a stop on request
(Ctrl-C, SIGTERM) first wait for it. A save that failed on any rank fails on every rank
(its phases end in agreement); the trainer learns of it at a step boundary agreed by all
ranks (stop_agreement.py) and stops there, naming the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.staging import BlockingAsyncStager

from llm_gym.runner.checkpoint import Snapshot, write_checkpoint
from llm_gym.runner.distributed import World


class AsyncCheckpointer:
    """Writes one checkpoint at a time in a background thread; see the module docstring.

    Construct it on every rank together (it creates a process group).
    """

    def __init__(self, world: World) -> None:
        group = dist.new_group(backend="gloo")
        # Its tensors (agreement flags, the writer token) live on the CPU, as gloo needs.
        self._world = dataclasses.replace(world, device=torch.device("cpu"), group=group)
        # A fresh host copy per save: the cached variant reuses buffers but not the plain
        # values around them (the learning rate in the optimizer's param_groups).
        self._stager = BlockingAsyncStager(cache_staged_state_dict=False)
        self._thread: threading.Thread | None = None
        self._outcome: Path | BaseException | None = None
        self.step: int | None = None  # of the save in flight

    def save(self, run_dir: Path, step: int, snapshot: Snapshot, keep_last: int | None,
             ) -> None:
        """Start writing ``snapshot`` as the checkpoint of ``step``; returns once it is
        copied. Waits for the save in flight first (raising its error, if it failed)."""
        self.wait()  # at most one in flight
        staged = Snapshot(snapshot.payload, self._stager.stage(snapshot.state))
        self._thread = threading.Thread(
            target=self._write, args=(Path(run_dir), step, staged, keep_last),
            name=f"checkpoint-step-{step}", daemon=True)
        self.step = step
        self._thread.start()

    def _write(self, run_dir: Path, step: int, staged: Snapshot, keep_last: int | None,
               ) -> None:
        try:
            self._outcome = write_checkpoint(run_dir, step, staged, world=self._world,
                                             keep_last=keep_last)
        except BaseException as exc:  # handed to the training thread by wait()
            self._outcome = exc

    def failed(self) -> bool:
        """True once the save in flight has ended with an error (on this rank)."""
        return (self._thread is not None and not self._thread.is_alive()
                and isinstance(self._outcome, BaseException))

    def wait(self) -> Path | None:
        """Wait for the save in flight; return its checkpoint (None if there was none),
        or raise what it raised."""
        if self._thread is None:
            return None
        self._thread.join()
        self._thread, outcome, self._outcome = None, self._outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        """Forget a save still in flight after a failure elsewhere (its thread is a
        daemon: the process does not wait for a peer that may never answer)."""
        self._thread = None
        self._stager.close()
