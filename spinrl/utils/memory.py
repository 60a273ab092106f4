"""Process-wide allocator setting for the training loops."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the OS.

    A training step allocates and frees the same large temporaries every time. By default glibc serves
    blocks above its (adaptive, at most 32 MB) mmap threshold with fresh mappings and trims the heap
    top on free, so each step pays first-touch page faults: ~16k per paper-preset ASM pretraining step
    (64 MB zeroed by the kernel), none with this setting (`python benchmarks/allocator.py` counts them
    and times both). With mmap-served blocks and heap trimming off, the process reuses its peak heap instead; its
    resident memory stays at its peak. Called by `train`, `pretrain` and `behaviour train`; idempotent;
    a no-op off glibc or with SPINRL_KEEP_FREED_MEMORY=0. Returns whether the setting is in force.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("SPINRL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
