"""Process-level tuning for a long-running relay.

``tune_aes`` measures whether OpenSSL's AES-GCM code outruns its AES-CTR code on this CPU (it
does twice over where there is VAES) and, if so, lets bulk keystreams use it
(``relay.keystream``).

glibc's malloc hands buffers of 128 KiB and more (asyncio reads up to 256 KiB at a time)
straight to mmap and gives them back to the kernel on free, and it trims the heap eagerly. A
relay moving gigabytes then spends most of its CPU on page faults for freshly zeroed pages
(``bench/relay_bench.py`` measured about 900,000 faults per GiB). Raising the two thresholds
keeps those buffers in the heap and reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from relay import keystream

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


GCM_PAYS = 1.25
"""How much faster GCM must be before keystreams move to it: switching costs ~60 us each."""


def tune_aes() -> float:
    """Measure GCM against CTR and enable ``relay.keystream``'s GCM path when it pays; the
    speed-up measured (CTR's time over GCM's, for 256 KiB)."""
    speedup = gcm_speedup()
    keystream.use_gcm(keystream.SWITCH_AFTER if speedup >= GCM_PAYS else None)
    return speedup


def describe_aes(speedup: float) -> str:
    """Which OpenSSL code computes bulk keystreams, given ``tune_aes``'s speed-up."""
    if speedup >= GCM_PAYS:
        return f"AES-GCM code past each stream's first MiB ({speedup:.1f}x AES-CTR's speed here)"
    return f"AES-CTR code (AES-GCM code would be {speedup:.1f}x as fast here: not worth it)"


@functools.cache
def gcm_speedup() -> float:
    """CTR's time over GCM's for 256 KiB, the best of 5 runs each (well under a millisecond
    in all). Measured once per process."""
    data = memoryview(bytearray(256 * 1024 + 15))
    best = []
    for mode in (modes.CTR(os.urandom(16)), modes.GCM(os.urandom(16))):
        ctx = Cipher(algorithms.AES(os.urandom(32)), mode).encryptor()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            ctx.update_into(data[: 256 * 1024], data)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    return best[0] / max(best[1], 1e-9)
