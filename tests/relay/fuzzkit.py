"""Shared by the relay's fuzz tests (``test_fuzz_relay.py``, ``test_fuzz_obfs2.py``): hypothesis
settings, the wire constants of PROTOCOLS.md written out again rather than taken from the
modules under test, and a seeded stand-in for a module's ``os.urandom``."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TypeVar
from unittest import mock

from hypothesis import HealthCheck, settings

from relay.obfs2 import Secret

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=100)

NOW = 1_800_000_000  # 2027-01-15, fixed so nothing depends on the clock
KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")
OTHER = bytes.fromhex("fedcba9876543210fedcba9876543210")
MAIN = Secret("main", KEY)
SECRETS = (Secret("other", OTHER), MAIN)
DOMAIN = "example.com"
T = TypeVar("T")

# PROTOCOLS.md, written out again rather than taken from the modules.
MAX_PAYLOAD = 16384
MAX_PENDING = 5 + MAX_PAYLOAD + 256
GREASE = {bytes([b, b]) for b in range(0x0A, 0x100, 0x10)}
TAGS = (b"\xef\xef\xef\xef", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd")
FORBIDDEN_STARTS = (
    b"HEAD",
    b"POST",
    b"GET ",
    b"OPTI",
    b"\xdd\xdd\xdd\xdd",
    b"\xee\xee\xee\xee",
    b"\x16\x03\x01\x02",
)
# The HTTP methods clients are required to avoid as a header's first 4 bytes; other methods
# (PUT, DELETE...) can begin a genuine header, so the relay may not mask them early.
HTTP_METHODS = b"GET POST HEAD OPTIONS".split()

# ---------------------------------------------------------------------------------------------
# Helpers: deterministic randomness, an independent ClientHello signer and verifier
# ---------------------------------------------------------------------------------------------


class SeededOS:
    """Stands in for ``os`` in a module: ``urandom`` hands out ``first`` candidates, then a
    seeded stream (each candidate is padded or cut to the requested size)."""

    def __init__(self, seed: int, first: Sequence[bytes] = ()) -> None:
        self._rng = random.Random(seed)
        self._first = list(first)

    def urandom(self, n: int) -> bytes:
        if self._first:
            return (self._first.pop(0) + self._rng.randbytes(n))[:n]
        return self._rng.randbytes(n)


@contextmanager
def seeded(module: object, seed: int, first: Sequence[bytes] = ()) -> Iterator[None]:
    with mock.patch.object(module, "os", SimpleNamespace(urandom=SeededOS(seed, first).urandom)):
        yield
