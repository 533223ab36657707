"""Shared fixtures of the benchmarks, and the table of targets printed at the end.

Every benchmark reports its headline figures into one session-wide collector, and
``nox -s bench`` ends with a single table: each figure, its target, the value measured
and ``MISSED`` where the target was not met. A missed target does not fail the test (the
machine may be shared); the table makes it impossible to overlook.

The collector API, for a new benchmark file (``test_bench_<what>.py``)::

    def test_something(benchmark, bench_targets):
        ...
        bench_targets.add("what was measured", value, at_least=0.9)   # or at_most=...
        bench_targets.add("a figure with no target", seconds, unit=" s")  # reported only

``add(figure, value, *, at_least=None, at_most=None, unit="", digits=3)`` records one row
and returns whether the target was met (None when the figure has no target). ``value``
is a number; ``unit`` is appended to it and to the target when they are printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class TargetRow:
    figure: str
    measured: str
    target: str
    met: bool | None  # None: reported, no target


class BenchTargets:
    def __init__(self) -> None:
        self.rows: list[TargetRow] = []

    def add(self, figure: str, value: float, *, at_least: float | None = None,
            at_most: float | None = None, unit: str = "", digits: int = 3) -> bool | None:
        def shown(x: float) -> str:
            return f"{x:,.{digits}f}{unit}"

        met, target = None, "reported"
        if at_least is not None:
            met, target = value >= at_least, f">= {shown(at_least)}"
        if at_most is not None:
            met = (met is not False) and value <= at_most
            target = (f"{target}, " if at_least is not None else "") + f"<= {shown(at_most)}"
        self.rows.append(TargetRow(figure, shown(value), target, met))
        return met

    def table(self) -> list[str]:
        width = max(len(r.figure) for r in self.rows)
        lines = [f"{'figure':<{width}}  {'target':>16}  {'measured':>14}  ",
                 "-" * (width + 44)]
        for r in self.rows:
            mark = {True: "ok", False: "MISSED", None: ""}[r.met]
            lines.append(f"{r.figure:<{width}}  {r.target:>16}  {r.measured:>14}  {mark}")
        missed = sum(r.met is False for r in self.rows)
        lines.append(f"{missed} of {sum(r.met is not None for r in self.rows)} targets missed"
                     if missed else "every target met")
        return lines


_TARGETS = BenchTargets()


@pytest.fixture(scope="session")
def bench_targets() -> BenchTargets:
    return _TARGETS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TARGETS.rows:
        return
    terminalreporter.section("benchmark targets")
    for line in _TARGETS.table():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory):
    """A demo-data cache of this session's own, prepared by the first run that needs it."""
    cache = tmp_path_factory.mktemp("demo")
    before = os.environ.get("LLM_GYM_DEMO_CACHE")
    os.environ["LLM_GYM_DEMO_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("LLM_GYM_DEMO_CACHE")
    else:
        os.environ["LLM_GYM_DEMO_CACHE"] = before
