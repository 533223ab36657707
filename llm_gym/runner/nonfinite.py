"""The divergence guard: an update whose gradient norm is not finite is never applied.

Knowing whether a norm is finite means reading it on the host, and reading a GPU tensor
on the host every step stalls the CPU until the GPU has caught up (a host-device sync),
which leaves the GPU idle while the CPU then launches the optimizer and the next forward.
So the guard has two ways of skipping:

- **on the device**, when every parameter group of the optimizer runs the fused kernels
  (AdamW's default on CUDA): the optimizer is handed a ``found_inf`` flag, the same
  protocol ``torch.amp.GradScaler`` uses, and the fused kernel leaves weights, moments
  and step count untouched where the flag is set. Nothing is read back per step; the
  norms of the steps since the last check are read in one go at the next check (a
  logging step or a checkpoint, where the loop reads the loss anyway).
- **on the host** for every other optimizer: the norm is read each step and
  ``optimizer.step()`` is not called for a non-finite one (the check is immediate).

Either way the learning-rate schedule advances on a skipped step: it follows the step
count, like everything else that counts steps. With ``on_nonfinite=stop`` the device path
stops at the next check, naming the first bad step; the bad update was never applied and
no checkpoint is written past it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Literal

import torch

from llm_gym.errors import UserError


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can skip an update by a device flag (fused kernels only)."""
    return bool(optimizer.param_groups) and all(
        group.get("fused") for group in optimizer.param_groups
    )


class NonfiniteGuard:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mode: Literal["stop", "skip"],
        *,
        main: bool,
        describe_checkpoint: Callable[[], str] = lambda: "",
    ) -> None:
        """``describe_checkpoint`` says which checkpoint is intact, for the stop message."""
        self.optimizer, self.mode, self.main = optimizer, mode, main
        self.on_device = skips_on_device(optimizer)
        self.describe_checkpoint = describe_checkpoint
        self.last_norm = math.nan  # the newest checked norm, for the metrics
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, norm) not yet read back

    def step(self, grad_norm: torch.Tensor, step: int) -> None:
        """Apply the optimizer's update for training step ``step`` (1-based) unless
        ``grad_norm`` is not finite. Gradients are cleared either way."""
        grad_norm = grad_norm.detach()
        self._pending.append((step, grad_norm))
        if self.on_device:
            self.optimizer.found_inf = (~torch.isfinite(grad_norm)).to(torch.float32)
            self.optimizer.step()
        elif math.isfinite(float(grad_norm)):  # the per-step host read
            self.optimizer.step()
        else:
            self.check(step)  # raises with mode="stop"
        self.optimizer.zero_grad(set_to_none=True)

    def check(self, now: int) -> None:
        """Read back the norms since the last check (one sync); warn about skipped steps,
        or with ``mode="stop"`` raise a UserError naming the first. ``now``: the step the
        loop has reached."""
        if not self._pending:
            return
        norms = torch.stack([n.float() for _, n in self._pending]).tolist()
        steps = [s for s, _ in self._pending]
        self._pending.clear()
        self.last_norm = norms[-1]
        bad = [(s, n) for s, n in zip(steps, norms, strict=True) if not math.isfinite(n)]
        if not bad:
            return
        first, value = bad[0]
        if self.mode == "stop":
            where = "stopped before updating the weights"
            if first != now:
                where = (f"its update was skipped, and the run stopped at step {now}, "
                         "the next check")
            raise UserError(
                f"step {first}: the loss or gradient norm is {value} (not finite); {where}. "
                + self.describe_checkpoint()
                + "Lower the learning rate, or set trainer.on_nonfinite=skip to skip such steps"
            )
        if self.main:
            for s, n in bad:
                print(f"warning: step {s}: gradient norm {n}; step skipped",
                      file=sys.stderr, flush=True)
