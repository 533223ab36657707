"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llm_gym import core_plugin
from llm_gym.registry import ResolverRegistry, collect_components, hookimpl
from llm_gym.registry.plugins import new_plugin_manager

REPO = Path(__file__).resolve().parents[1]
# A test plugin (loss that turns NaN or kills its rank), installed per test by `faults`.
FAULT_SITE = REPO / "tests" / "fixtures" / "fault_site"


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch):
    """The fault-injection plugin is installed (on sys.path) for this test only."""
    monkeypatch.syspath_prepend(str(FAULT_SITE))
    yield
    sys.modules.pop("llm_gym_fault_plugin", None)


class BuiltinOptim:
    """The built-in optimizers and schedulers alone: enough for config tests."""

    @hookimpl
    def llm_gym_components(self) -> list[type]:
        return collect_components("llm_gym_components.optim")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo-data cache for the whole session: the corpus is prepared on first use."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture
def use_demo_cache(demo_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs in this test (in-process or in a subprocess) use the session's demo cache."""
    monkeypatch.setenv("LLM_GYM_DEMO_CACHE", str(demo_cache))
    return demo_cache


@pytest.fixture
def optim_registry() -> ResolverRegistry:
    manager = new_plugin_manager()
    manager.register(core_plugin, name="llm_gym.core")
    manager.register(BuiltinOptim(), name="optim")
    return ResolverRegistry(manager)


def write_fake_distribution(
    site: Path, package: str, files: dict[str, str], *, dist: str = "acme-widgets",
    entry_point: str = "acme",
) -> Path:
    """An installed distribution on disk: a package plus a dist-info naming an llm_gym
    entry point. Putting ``site`` on sys.path (or PYTHONPATH) installs it, as pip would."""
    pkg = site / package
    pkg.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[llm_gym]\n{entry_point} = {package}\n")
    return site


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m llm_gym ARGS`` as a user would, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run(
        [sys.executable, "-m", "llm_gym", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd or REPO, timeout=timeout,
    )
