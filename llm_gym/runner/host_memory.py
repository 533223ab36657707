"""Keep freed host memory for reuse, so a CPU training step does not page-fault its tensors in.

glibc's malloc serves every allocation of 32 MiB or more (less, until its dynamic
threshold has grown) with a fresh ``mmap`` and hands it back with ``munmap`` when freed.
A CPU training step allocates and frees the same large tensors every step (logits, their
gradient, the MLP activations): each comes back from the kernel as untouched pages, and
the first write to each 4 KiB page faults and zeroes it. For gpt2-tiny's benchmark shape
that is about 35,000 page faults and 100 ms of system time per step on a busy 2-core
machine; nanoGPT's loop pays it too (docs/benchmarks.md).

Raising the mmap threshold serves those tensors from the heap instead, and raising the
trim threshold keeps the freed heap mapped, so the next step reuses warm pages: about
70-400 faults per step. Numbers do not change: which address a tensor gets never enters
the arithmetic. The cost is that a process's resident memory stays at its peak instead
of shrinking between steps, which a training process reaches every step anyway.

Only glibc has these knobs; elsewhere (macOS, musl) nothing is done. A user who tunes
malloc through the environment (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``) keeps
their settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Tensors up to 1 GiB come from the heap; a free top of the heap up to 2 GiB stays mapped.
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes a C int

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_host_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it to the kernel.

    Returns whether the settings were applied (False off glibc, or where the user's
    environment already tunes malloc). Process-wide and idempotent.
    """
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
