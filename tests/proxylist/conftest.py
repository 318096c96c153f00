"""Fixtures shared by the proxylist tests: one signing key and a trust root naming it."""

from __future__ import annotations

import pytest

from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot

ROLES = frozenset({"root", "lists", "links"})


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture(scope="module")
def root(key: SecretKey) -> TrustRoot:
    """A trust root in which ``key`` (named alice) signs links and lists."""
    thresholds = {"root": 1, "lists": 1, "links": 1, "log": 1}
    return TrustRoot(
        1, "2099-01-01T00:00:00Z", (TrustKey("alice", key.public_key, ROLES),), thresholds
    )
