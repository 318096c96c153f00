"""Shared settings, keys, strategies and checks for the signing parser fuzz tests."""

# Every parser gets arbitrary input and mutations of valid input. It may refuse only with our
# own error types (``SigningError`` and its subclasses), and whatever it accepts must be
# structurally valid: it re-serialises to the same or an equivalent form (DESIGN.md §5).
# The key, the clock and hypothesis itself are fixed, so a failure reproduces exactly.

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from signing.errors import FormatError, SigningError, VerificationError
from signing.minisign import PublicKey, SecretKey, Signature, parse_signature, sign, verify
from signing.trust import TrustKey, TrustRoot

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = 1_800_000_000.0  # 2027-01-15, fixed so nothing depends on the clock
# A fixed key whose link kid ("-_---_--AQI") uses both base64url-only characters.
KEY = SecretKey(bytes.fromhex("fbffbefbffbe0102"), bytes(range(32)))
THRESHOLD = {"root": 1, "lists": 1, "links": 1, "log": 1}
TRUST = TrustRoot(
    1,
    "2099-01-01T00:00:00Z",
    (TrustKey("k", KEY.public_key, frozenset({"root", "lists", "links"})),),
    THRESHOLD,
)


T = TypeVar("T")


def refused(errors: type[SigningError], fn: Callable[[], T]) -> T | None:
    """Call ``fn``; return None when it refuses with ``errors``, let anything else through."""
    try:
        return fn()
    except errors:
        return None


# --- characters and text ------------------------------------------------------------------

# Characters that matter to the parsers, plus a few whose lower-case form is ASCII (K, the
# Kelvin sign) or two characters long (İ), and lone surrogates, which a str can hold (from
# os.fsdecode or sys.argv) but UTF-8 cannot encode.
SPECIAL = "?&=#%:[]./-_+ \t\r\n\x00\x7f\u212a\u0130\u2028\ufeff\uff12\u0662"
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
ANY_CHAR = st.one_of(st.characters(), st.sampled_from(SPECIAL), SURROGATES)


# --- dates --------------------------------------------------------------------------------

YEARS = st.integers(0, 9999) | st.sampled_from([0, 1, 1969, 1970, 2038, 9999])
MONTHS = st.integers(1, 12) | st.integers(0, 13)
DAYS = st.integers(1, 28) | st.integers(0, 32)
HOURS = st.integers(0, 23) | st.integers(24, 25)


# --- minisign files -----------------------------------------------------------------------

SIGNATURE = sign(KEY, b"msg", "comment")
LEGACY_SIGNATURE = sign(KEY, b"msg", "timestamp:1 file:msg", prehash=False)


def check_public_key(text: str) -> PublicKey | None:
    pk = refused(FormatError, lambda: PublicKey.parse(text))
    if pk is None:
        return None
    assert len(pk.key_id) == 8 and len(pk.key) == 32
    assert pk.line in text.split("\n"), "the base64 line must be canonical"
    assert PublicKey.parse(pk.text()) == pk
    assert PublicKey.parse(pk.line) == pk
    if text.startswith(pk.text().partition("\n")[0] + "\n"):
        assert pk.text() in (text, text + "\n")
    junk = Signature(b"ED", pk.key_id, bytes(64), "c", bytes(64))
    with pytest.raises(VerificationError):
        verify(pk, junk, message=b"msg")
    return pk


def check_signature(text: str) -> Signature | None:
    """Parses exactly, and verifies only if nothing signed changed."""
    sig = refused(FormatError, lambda: parse_signature(text))
    if sig is None:
        return None
    # A missing final newline is tolerated (as minisign does); everything else is kept.
    assert sig.text() == (text if text.endswith("\n") else text + "\n")
    assert parse_signature(sig.text()) == sig
    try:
        verify(KEY.public_key, sig, message=b"msg")
    except VerificationError:
        return sig
    original = SIGNATURE if sig.prehashed else LEGACY_SIGNATURE
    signed = (sig.algorithm, sig.key_id, sig.signature, sig.trusted_comment, sig.global_signature)
    assert signed == (
        original.algorithm,
        original.key_id,
        original.signature,
        original.trusted_comment,
        original.global_signature,
    ), f"{text!r} verified with other signed fields"
    return sig
