"""The process's memory: its resident size, and giving freed heap pages back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK_BYTES = 1024 * 1024


@cache
def _glibc(function: str):  # noqa: ANN202 - a ctypes function, or None where the C library has none
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), function)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Blocks of `threshold` bytes and more get their own mapping, unmapped when freed. glibc's
    default raises this threshold to the size of every large block freed (up to 32 MB), so that
    a request's large arrays end up inside the heap, where they stay after the request; a fixed
    threshold keeps the memory coming back. Call it once, before serving. False where there is no
    glibc."""
    mallopt = _glibc("mallopt")
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold))


def trim_heap() -> None:
    """glibc keeps freed memory in its heaps for reuse; malloc_trim(0) returns the free pages.
    A no-op where the C library has no malloc_trim. ctypes releases the GIL during the call."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc; 0 where there is no /proc."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
