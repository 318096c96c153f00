"""Process-level tuning for a long-running relay.

glibc's malloc hands buffers of 128 KiB and more (asyncio reads up to 256 KiB at a time)
straight to mmap and gives them back to the kernel on free, and it trims the heap eagerly. A
relay moving gigabytes then spends most of its CPU on page faults for freshly zeroed pages
(``bench/relay_bench.py`` measured about 900,000 faults per GiB). Raising the two thresholds
keeps those buffers in the heap and reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 4 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Apply the thresholds through ``mallopt``; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
