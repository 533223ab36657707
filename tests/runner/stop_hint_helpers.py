"""Workers for the launcher's stop-hint tests (spawned, so importable by name)."""

from __future__ import annotations

import os
import signal
import time


def killed_before_any_handler(rank_to_kill: int) -> None:
    """``rank_to_kill`` gets SIGTERM while still starting (no stop handler installed,
    so the signal's default action kills it); the others wait to be stopped."""
    if int(os.environ["RANK"]) == rank_to_kill:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
