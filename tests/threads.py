"""Thread count for test helpers that also run inside the test process itself."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def single_threaded(fn: F) -> F:
    """Run ``fn`` with one torch thread (two processes share two cores), then restore.

    Restoring matters: a helper called in-process must not leave the test process on one
    thread, or a later test comparing an in-process run with a subprocess run (default
    threads) compares different floating-point reduction orders.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper  # type: ignore[return-value]
