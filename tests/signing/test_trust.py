"""Trust root: thresholds, revocation and TUF-style rotation."""

from __future__ import annotations

import pytest

from signing.errors import FormatError, VerificationError
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot, parse_trust_root, sign_trust_root, verify_trust_root

NOW = 1_790_000_000.0
ALL = frozenset({"root", "lists", "links"})


def make(
    version: int,
    keys: list[SecretKey],
    root_threshold: int = 2,
    expires: str = "2099-01-01T00:00:00Z",
) -> bytes:
    trust_keys = tuple(TrustKey(f"k{k.hex_id}", k.public_key, ALL) for k in keys)
    threshold = {"root": root_threshold, "lists": 1, "links": 1, "log": 1}
    return TrustRoot(version, expires, trust_keys, threshold).encode()


@pytest.fixture(scope="module")
def old_keys() -> list[SecretKey]:
    return [SecretKey.generate() for _ in range(3)]


@pytest.fixture(scope="module")
def new_keys() -> list[SecretKey]:
    return [SecretKey.generate() for _ in range(3)]


def sigs(data: bytes, keys: list[SecretKey]):
    return [sign_trust_root(data, k) for k in keys]


def reason(*args, **kwargs) -> str:
    with pytest.raises(VerificationError) as info:
        verify_trust_root(*args, **kwargs)
    return info.value.reason


def test_round_trip_and_self_threshold(old_keys) -> None:
    data = make(1, old_keys)
    assert parse_trust_root(data).encode() == data
    root = verify_trust_root(data, sigs(data, old_keys[:2]), NOW)
    assert root.version == 1
    assert reason(data, sigs(data, old_keys[:1]), NOW) == "threshold"


def test_rotation_signed_only_by_new_keys_is_rejected(old_keys, new_keys) -> None:
    v1 = make(1, old_keys)
    previous = verify_trust_root(v1, sigs(v1, old_keys), NOW)
    v2 = make(2, new_keys)
    assert reason(v2, sigs(v2, new_keys), NOW, previous, v1) == "threshold"


def test_rotation_signed_by_old_and_new_thresholds_is_accepted(old_keys, new_keys) -> None:
    v1 = make(1, old_keys)
    previous = verify_trust_root(v1, sigs(v1, old_keys), NOW)
    v2 = make(2, new_keys)
    both = sigs(v2, old_keys[:2] + new_keys[1:])
    assert verify_trust_root(v2, both, NOW, previous, v1).version == 2


def test_rotation_with_old_threshold_but_not_new_is_rejected(old_keys, new_keys) -> None:
    v1 = make(1, old_keys)
    previous = verify_trust_root(v1, sigs(v1, old_keys), NOW)
    v2 = make(2, new_keys)
    assert reason(v2, sigs(v2, old_keys + new_keys[:1]), NOW, previous, v1) == "threshold"


def test_rollback_gap_conflict_and_expiry(old_keys) -> None:
    v1, v2, v3 = (make(v, old_keys) for v in (1, 2, 3))
    previous = verify_trust_root(v2, sigs(v2, old_keys), NOW)
    assert reason(v1, sigs(v1, old_keys), NOW, previous, v2) == "rollback"
    v4 = make(4, old_keys)
    assert reason(v4, sigs(v4, old_keys), NOW, previous, v2) == "gap"
    other_v2 = make(2, old_keys, root_threshold=3)
    assert reason(other_v2, sigs(other_v2, old_keys), NOW, previous, v2) == "conflict"
    assert verify_trust_root(v3, sigs(v3, old_keys), NOW, previous, v2).version == 3
    expired = make(3, old_keys, expires="2026-01-01T00:00:00Z")
    assert reason(expired, sigs(expired, old_keys), NOW, previous, v2) == "expired"


def test_revoked_root_key_does_not_count(old_keys) -> None:
    keys = tuple(TrustKey(f"k{i}", k.public_key, ALL) for i, k in enumerate(old_keys))
    root = TrustRoot(1, "2099-01-01T00:00:00Z", keys, {"root": 2, "lists": 1, "links": 1, "log": 1})
    revoked = root.with_revoked("k0", "2026-01-01T00:00:00Z")
    data = revoked.encode()
    assert reason(data, sigs(data, old_keys[:2]), NOW) == "threshold"
    assert verify_trust_root(data, sigs(data, old_keys[1:]), NOW).version == 1


def test_thresholds_must_be_reachable(old_keys) -> None:
    with pytest.raises(FormatError, match="threshold root=4"):
        parse_trust_root(make(1, old_keys, root_threshold=4))
    with pytest.raises(FormatError, match="threshold"):
        parse_trust_root(make(1, old_keys, root_threshold=0))
