"""Keep freed CPU memory in the process, so large tensors are not page-faulted in every step.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the system on ``free``. A detector's largest activations at
200–480 px are tens of MiB each, so every training step maps, zero-fills (one page fault per
4 KiB) and unmaps them again (the step times with and without: BENCHMARKS.md, "Step time on
2 CPU cores").
:func:`keep_freed_memory` turns that off for the process (``mallopt``: no mmap'd blocks,
freed memory kept up to 1 GiB above the heap's use), as jemalloc or tcmalloc would.

It changes where memory comes from, never a value. The training and evaluation entry
(``setup_run``), the pipeline and the benchmarks call it; a library user calls it if they
want it. ``TKD_D2_MALLOC=default`` keeps glibc's defaults; other C libraries (musl, macOS)
are left alone.
"""
import ctypes
import ctypes.util
import os
import sys

from ..errors import ConfigError

__all__ = ["keep_freed_memory", "ENV_VAR"]

ENV_VAR = "TKD_D2_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_TRIM_THRESHOLD = 1 << 30
_applied = None


def keep_freed_memory():
    """Apply the setting once per process; True when glibc took it."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice == "default" or not sys.platform.startswith("linux"):
        return _applied
    if choice not in ("", "keep"):
        raise ConfigError(f"environment variable {ENV_VAR}={choice!r}: use 'keep' (the default) or 'default' "
                          "(glibc's own malloc settings)")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return _applied
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc
        return _applied
    mallopt = libc.mallopt
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return _applied
