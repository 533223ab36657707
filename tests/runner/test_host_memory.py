"""keep_freed_host_memory: large tensors freed and allocated again stop page-faulting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llm_gym.runner.host_memory import _glibc

# Allocates, writes and frees a 64 MiB tensor 30 times; prints the minor page faults of the
# last 10 (the heap needs a few rounds to hold enough freed room for the aligned requests).
SCRIPT = """
import resource, sys, torch
from llm_gym.runner.host_memory import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None
for _ in range(20):
    torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 << 20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(_glibc() is None, reason="malloc tuning exists on glibc only")
def test_freed_tensors_are_reused_without_page_faults():
    applied, kept = _faults("keep")
    _, plain = _faults("plain")
    assert applied == "True"
    # 10 x 64 MiB is 163,840 pages: the plain allocator faults each of them in again.
    assert plain > 100_000, plain
    assert kept < plain / 50, (kept, plain)


@pytest.mark.skipif(_glibc() is None, reason="malloc tuning exists on glibc only")
def test_a_users_own_malloc_settings_are_kept():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    applied, faults = _faults("keep", env)
    assert applied == "False"
    assert faults > 100_000
