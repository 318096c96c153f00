"""``relay.keystream``: AES-256-CTR keystreams that move to OpenSSL's AES-GCM code mid-stream.

Every output is checked against ``cryptography``'s own AES-256-CTR over the same bytes, with
counters chosen to cross the places where GCM and CTR part ways: the low 32 bits of the
counter wrapping (GCM's ``inc32`` does not carry; CTR does) and the whole 128-bit counter
wrapping.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from relay import keystream
from relay.keystream import Keystream, gcm_iv
from relay.tuning import GCM_PAYS, describe_aes, gcm_speedup, tune_aes
from tests.relay.fuzzkit import FUZZ

TOP = 1 << 128
LOW32 = 1 << 32

counters = st.one_of(
    st.integers(0, TOP - 1),
    st.integers(1, 40).map(lambda n: LOW32 - n),  # low 32 bits about to wrap
    st.integers(1, 40).map(lambda n: (7 << 96) + LOW32 - n),
    st.integers(1, 40).map(lambda n: TOP - n),  # the whole counter about to wrap
    st.integers(0, 40),
)
chunks = st.lists(
    st.tuples(st.integers(0, 700), st.sampled_from(["update", "into", "in-place"])),
    max_size=12,
)


def reference(key: bytes, counter: int, data: bytes) -> bytes:
    return (
        Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor().update(data)
    )


def run(stream: Keystream, data: bytes, steps: list[tuple[int, str]]) -> bytes:
    """Feed ``data`` through ``stream`` in the given steps (and the rest in one), each step
    through ``update``, ``update_into`` a fresh buffer, or ``update_into`` in place."""
    out, pos = bytearray(), 0
    for size, how in [*steps, (len(data), "update")]:
        part = data[pos : pos + size]
        pos += len(part)
        if how == "update":
            out += stream.update(part)
            continue
        buf = bytearray(part) + bytearray(15) if how == "in-place" else bytearray(len(part) + 15)
        source = memoryview(buf)[: len(part)] if how == "in-place" else part
        written = stream.update_into(source, buf)
        assert written == len(part)
        out += buf[:written]
    return bytes(out)


@given(
    key=st.binary(min_size=32, max_size=32),
    counter=counters,
    switch_after=st.none() | st.integers(0, 300),
    segment=st.integers(1, 400),
    steps=chunks,
    size=st.integers(0, 3000),
)
@FUZZ
def test_matches_aes_ctr_wherever_it_moves_to_gcm(
    key: bytes,
    counter: int,
    switch_after: int | None,
    segment: int,
    steps: list[tuple[int, str]],
    size: int,
) -> None:
    data = os.urandom(size)
    stream = Keystream(key, counter.to_bytes(16, "big"), switch_after=switch_after, segment=segment)
    assert run(stream, data, steps) == reference(key, counter, data)
    assert stream.position == size


@given(key=st.binary(min_size=32, max_size=32), counter=counters)
@FUZZ
def test_gcm_iv_starts_gcm_at_the_counter(key: bytes, counter: int) -> None:
    """NIST SP 800-38D 7.1: GCM's first keystream block is AES_K(inc32(J0))."""
    gcm = Cipher(algorithms.AES(key), modes.GCM(gcm_iv(key, counter))).encryptor()
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(counter.to_bytes(16, "big"))
    assert gcm.update(bytes(16)) == block


def slow_multiply(x: int, y: int) -> int:
    """SP 800-38D Algorithm 1, bit by bit, on blocks as big-endian integers."""
    z, v = 0, y
    for i in range(127, -1, -1):
        if x >> i & 1:
            z ^= v
        v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
    return z


@given(x=st.integers(0, TOP - 1), y=st.integers(0, TOP - 1))
@FUZZ
def test_field_arithmetic_matches_the_spec(x: int, y: int) -> None:
    reflect, multiply = keystream._reflect, keystream._multiply
    assert reflect(multiply(reflect(x), reflect(y))) == slow_multiply(x, y)
    if y:
        assert multiply(reflect(y), keystream._inverse(reflect(y))) == 1
    assert reflect(reflect(x)) == x


def test_zero_has_no_inverse() -> None:
    with pytest.raises(ZeroDivisionError):
        keystream._inverse(0)


def test_a_key_with_a_zero_hash_key_stays_on_ctr() -> None:
    """AES_K(0) = 0 (a 2^-128 chance) leaves GCM's IV undefined: the stream goes on with CTR
    from the same byte. No such key is known, so gcm_iv is made to fail as it would."""
    key, iv, data = os.urandom(32), os.urandom(16), os.urandom(5000)
    stream = Keystream(key, iv, switch_after=1000)
    with mock.patch.object(keystream, "gcm_iv", side_effect=ZeroDivisionError):
        got = run(stream, data, [(999, "update"), (3, "into"), (1500, "in-place")])
    assert stream.engine == "ctr"
    assert got == reference(key, int.from_bytes(iv, "big"), data)


def test_use_gcm_applies_to_keystreams_made_afterwards() -> None:
    key, iv, data = os.urandom(32), os.urandom(16), os.urandom(100_000)
    previous = keystream.use_gcm(0)
    try:
        made_with_gcm = Keystream(key, iv)
        keystream.use_gcm(None)
        made_without = Keystream(key, iv)
    finally:
        keystream.use_gcm(previous)
    expected = reference(key, int.from_bytes(iv, "big"), data)
    assert made_with_gcm.update(data) == made_without.update(data) == expected
    assert (made_with_gcm.engine, made_without.engine) == ("gcm", "ctr")


def test_tune_aes_enables_gcm_only_where_it_pays() -> None:
    previous = keystream.use_gcm(None)
    try:
        speedup = tune_aes()
    finally:
        enabled = keystream.use_gcm(previous)  # gives back what tune_aes set
    assert speedup == gcm_speedup() > 0
    assert enabled == (keystream.SWITCH_AFTER if speedup >= GCM_PAYS else None)
    assert describe_aes(GCM_PAYS).startswith("AES-GCM code past each stream's first MiB (1.2x")
    assert describe_aes(1.1).startswith("AES-CTR code (AES-GCM code would be 1.1x")
