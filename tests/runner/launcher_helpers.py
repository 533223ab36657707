"""Workers for the launcher's stop tests: they wait for a stop request as the trainer does
(StopRequest + StopAgreement, one check per "step") and raise Interrupted together.

Run as a script (``python -m tests.runner.launcher_helpers READY_DIR``), it is a launcher
of two such workers that reports the way the CLI does, so a test can signal it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# How long a worker waits for a stop before giving up: no test may hang on it.
DEADLINE_S = 60.0


def pid_files(ready_dir: Path) -> list[Path]:
    return sorted(Path(ready_dir).glob("rank*.pid"))


def stop_when_asked(ready_dir: str, signal_rank: int | None = None, at_step: int = 3) -> None:
    """Step until the ranks agree to stop; ``signal_rank`` sends itself SIGTERM at
    ``at_step`` (one worker stopped by the scheduler), else the stop comes from outside."""
    from llm_gym.runner.distributed import distributed_world
    from llm_gym.runner.safety import Interrupted, StopRequest
    from llm_gym.runner.stop_agreement import StopAgreement

    with distributed_world() as world, StopRequest() as stop:
        agreement = StopAgreement(world)
        Path(ready_dir, f"rank{world.rank}.pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + DEADLINE_S
        step = 0
        while time.monotonic() < deadline:
            if world.rank == signal_rank and step == at_step:
                os.kill(os.getpid(), signal.SIGTERM)
            if agreement.agreed(stop.requested):
                agreement.finish()
                raise Interrupted(f"interrupted at step {step}; continue with --resume")
            time.sleep(0.02)
            step += 1
        raise RuntimeError(f"rank {world.rank}: no stop within {DEADLINE_S} s")


def main(ready_dir: str) -> None:
    from llm_gym.cli.output import print_error
    from llm_gym.errors import ReportedError, UserError
    from llm_gym.runner.launcher import launch_local

    try:
        launch_local(2, stop_when_asked, (ready_dir,))
    except (UserError, ReportedError) as exc:
        print_error(exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main(sys.argv[1])


def environment_seen(names: list[str]) -> dict[str, str | None]:
    """The values of ``names`` in this worker's environment."""
    return {name: os.environ.get(name) for name in names}
