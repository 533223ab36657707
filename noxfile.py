"""Sessions: lint, tests and dist (the default, what CI runs), bench, gpu.

torch is installed first, pinned, because a bare requirement on a machine without torch
pulls a multi-GB CUDA build: here ``torch==2.13.0`` is a CPU wheel on local disk. On a
CUDA machine set LLM_GYM_TORCH (e.g. ``LLM_GYM_TORCH="torch==2.13.0"`` with a CUDA index).
"""

from __future__ import annotations

import os

import nox

# CI runs these (the README's test command is plain `nox`): dist holds the kill tests.
nox.options.sessions = ["lint", "tests", "dist"]
nox.options.default_venv_backend = "venv"

TORCH = os.environ.get("LLM_GYM_TORCH", "torch==2.13.0")


def install(session: nox.Session, extras: str = "test,plot,tensorboard") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The default CPU suite (also what .ci/run runs)."""
    install(session)
    session.run("pytest", "-q", "-m", "not gpu and not dist", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def dist(session: nox.Session) -> None:
    """Longer multi-process tests (kill/resume, larger worlds)."""
    install(session)
    session.run("pytest", "-q", "-m", "dist", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks measured side by side; ratios printed, figures in docs/benchmarks.md."""
    install(session)
    session.run("pytest", "benchmarks", "-q", "-s", "--benchmark-enable", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: GPU tests (nccl, bf16, compile), then GPT-2 124M throughput/MFU."""
    install(session)
    session.run("pytest", "-q", "-m", "gpu", *session.posargs)
    session.run("python", "tools/gpu_check.py", "--out", "gpu-check.json")
