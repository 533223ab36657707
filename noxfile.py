"""Sessions: lint and tests (the default, what CI runs), dist, eval, bench, gpu.

torch is installed first, pinned, because a bare requirement on a machine without torch
pulls a multi-GB CUDA build: here ``torch==2.13.0`` is a CPU wheel on local disk. On a
CUDA machine set LLM_GYM_TORCH (e.g. ``LLM_GYM_TORCH="torch==2.13.0"`` with a CUDA index).

``tests`` runs the default suite, the lm-evaluation-harness bridge's tests and then the
multi-process ``dist`` tests in one virtualenv: installing torch and the test extras twice
cost CI minutes and a gigabyte of ``.nox`` for the same packages. ``nox -s dist`` and
``nox -s eval`` still run those alone (``dist`` with more random kills).

Installing: with uv beside nox (``pip install 'nox[uv]'``, the README's command) the
virtualenvs are made and filled by uv, in about 15 s where pip took over 2 minutes (pip's
resolver and its compiling of every module of every package, most never imported); nox
falls back to venv and pip without it. Modules are compiled as they are first imported
instead, into ``.nox/pycache`` (PYTHONPYCACHEPREFIX), so the checkout stays clean and a
machine that sets PYTHONDONTWRITEBYTECODE does not recompile torch in every process.
"""

from __future__ import annotations

import os

import nox

# CI runs these (the README's test command is plain `nox`).
nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "uv|venv"

HERE = os.path.dirname(os.path.abspath(__file__))
# uv does not read pip's configuration: hand it the local wheels pip was pointed at (on
# these machines the CPU build of torch; without it uv would fetch a multi-GB CUDA build).
if os.environ.get("PIP_FIND_LINKS") and "UV_FIND_LINKS" not in os.environ:
    os.environ["UV_FIND_LINKS"] = ",".join(os.environ["PIP_FIND_LINKS"].split())
# Bytecode written lazily, outside the checkout (see the module docstring).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(HERE, ".nox", "pycache"))

TORCH = os.environ.get("LLM_GYM_TORCH", "torch==2.13.0")
# The slowest tests close each pytest run, so a test that grows slow is seen at once.
DURATIONS = "--durations=15"


def install(session: nox.Session, extras: str = "test,plot,tensorboard", *more: str) -> None:
    # torch first and alone: pinned to the wheel this machine has before anything that
    # asks for torch can pull another build. pip too: the packaging test builds a wheel
    # with it, as a user would, and uv's virtualenvs come without it.
    session.install(TORCH)
    session.install("pip", "-e", f".[{extras}]", *more)


def install_eval(session: nox.Session, extras: str) -> None:
    """The eval extra (lm-eval) beside ``extras``, and accelerate: lm-eval's ``hf`` backend,
    which the bridge's agreement tests compare against, imports it."""
    install(session, f"{extras},eval", "accelerate")


@nox.session
def tests(session: nox.Session) -> None:
    """The default CPU suite with the lm-eval bridge, then the dist tests, in one
    environment (what CI runs)."""
    install_eval(session, "test,plot,tensorboard")
    # One worker per core, a test module per worker (its module fixtures built once).
    session.run("pytest", "-q", "-n", "auto", "--dist", "loadscope",
                "-m", "not gpu and not dist", DURATIONS, *session.posargs)
    if not session.posargs:  # posargs narrow the run to what was asked for
        session.run("pytest", "-q", "-m", "dist", DURATIONS)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session(default=False)
def dist(session: nox.Session) -> None:
    """The longer multi-process tests alone (kill/resume, larger worlds), with more
    random kills than CI's run of them."""
    install(session)
    session.run("pytest", "-q", "-m", "dist", DURATIONS, *session.posargs,
                env={"LLM_GYM_KILL_TRIALS": os.environ.get("LLM_GYM_KILL_TRIALS", "6")})


@nox.session(name="eval", default=False)
def eval_bridge(session: nox.Session) -> None:
    """The lm-evaluation-harness bridge against lm-eval's own hf backend (the eval extra;
    accelerate is what lm-eval's hf backend imports, needed by the reference side only)."""
    install_eval(session, "test")
    session.run("pytest", "-q", "-m", "lmeval", DURATIONS, *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks measured side by side; ratios printed, figures in docs/benchmarks.md."""
    install(session)
    session.run("pytest", "benchmarks", "-q", "-s", "--benchmark-enable", *session.posargs)


@nox.session(default=False)
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: GPU tests (nccl, bf16, compile), then GPT-2 124M throughput/MFU."""
    install(session)
    session.run("pytest", "-q", "-m", "gpu", *session.posargs)
    session.run("python", "tools/gpu_check.py", "--out", "gpu-check.json")
