"""Counting reads of tensor values into Python: each is a host-device sync on a GPU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_gym.runner.entry import run_recipe


class HostReads(TorchDispatchMode):
    """Counts reads of tensor values into Python, each a host-device sync on a GPU:
    ``.item()``, ``float()`` and ``bool()`` dispatch ``aten._local_scalar_dense``;
    ``.tolist()`` and ``.numpy()`` read a CPU tensor's memory without dispatching, so they
    are counted by wrapping them while the mode is active."""

    READERS = ("tolist", "numpy")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in self.READERS:
            setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))
        return super().__enter__()

    def __exit__(self, *exc):
        for name in self.READERS:
            delattr(torch.Tensor, name)  # the TensorBase method shows through again
        return super().__exit__(*exc)

    def _counted(self, method):
        def read(tensor, *args, **kwargs):
            self.count += 1
            return method(tensor, *args, **kwargs)

        return read


def reads_in_run(run_dir: Path, steps: int, overrides: Sequence[str] = ()) -> int:
    """Host reads in a whole gpt2-debug run of ``steps`` steps that logs only at its end
    and neither evaluates, checkpoints mid-run nor samples."""
    args = [f"trainer.max_steps={steps}", f"trainer.log_every={steps}",
            "trainer.eval_every=null", "trainer.checkpoint_every=null",
            "trainer.sample_prompt=null", *overrides]
    with HostReads() as reads:
        run_recipe("gpt2-debug", args, run_dir=run_dir)
    return reads.count
