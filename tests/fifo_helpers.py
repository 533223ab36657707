"""Calling code that must refuse a FIFO, without letting a regression hang the suite."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIFO = "is a FIFO (named pipe), not a regular file"


def bounded(fifo: Path, call: Callable[[], Any], seconds: float = 20.0) -> BaseException | None:
    """What ``call`` raised, or None; a call still blocked after ``seconds`` fails the test
    (the FIFO is then opened for writing and closed, so the blocked reader ends)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"blocked on the FIFO {fifo} for {seconds} s")
    return outcome[0]
