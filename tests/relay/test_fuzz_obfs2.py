"""Fuzz tests for the relay's obfuscated2 core (``relay.obfs2``): the client header parser and
generator, the DC header (plain and fast mode) and ``never_a_header``, against PROTOCOLS.md
"MTProto transport obfuscation". Whatever the parser accepts is checked against keystreams
derived here from PROTOCOLS.md; ``os.urandom`` is seeded so every example reproduces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import obfs2
from relay.errors import HandshakeError
from relay.obfs2 import Secret, client_header, ctr, dc_header, never_a_header, parse_client_header
from tests.relay.fuzzkit import (
    FORBIDDEN_STARTS,
    FUZZ,
    HTTP_METHODS,
    OTHER,
    SECRETS,
    TAGS,
    seeded,
)

# ---------------------------------------------------------------------------------------------
# 4. obfuscated2: parse_client_header
# ---------------------------------------------------------------------------------------------


@given(st.binary(max_size=100) | st.binary(min_size=64, max_size=64))
@FUZZ
def test_parse_client_header_only_raises_handshake_error(header: bytes) -> None:
    try:
        stream = parse_client_header(header, SECRETS)
    except HandshakeError as exc:
        if len(header) != 64:
            assert exc.reason == "short-header"
        else:
            assert exc.reason in ("unknown-secret", "bad-tag")
    else:  # 3 in 2**32 for random 64 bytes: only if it really decrypts to a tag
        assert len(header) == 64 and stream.tag in TAGS


keys = st.binary(min_size=16, max_size=16)
tags = st.sampled_from(TAGS)
dcs = st.integers(-1000, 1000) | st.sampled_from([-1, 0, 1, 2, 5, 203])


@st.composite
def header_candidates(draw: st.DrawFn) -> list[bytes]:
    """First urandom results: starts the generators must reject, to exercise their retry."""
    bad = st.one_of(
        st.sampled_from(FORBIDDEN_STARTS).map(lambda s: s + b"\x01\x02\x03\x04"),
        st.binary(min_size=7, max_size=7).map(lambda b: b"\xef" + b),
        st.binary(min_size=4, max_size=4).map(lambda b: b + bytes(4)),
    )
    return draw(st.lists(bad, max_size=3))


def make_client(key: bytes, tag: bytes, dc: int, seed: int, first: Sequence[bytes] = ()):
    with seeded(obfs2, seed, first):
        return client_header(key, tag, dc)


def check_generated(header: bytes) -> None:
    assert len(header) == 64
    assert header[0] != 0xEF
    assert header[:4] not in FORBIDDEN_STARTS
    assert header[4:8] != bytes(4)


@given(
    key=keys,
    tag=tags,
    dc=dcs,
    seed=st.integers(0, 2**32),
    first=header_candidates(),
    up=st.binary(max_size=300),
    down=st.binary(max_size=300),
)
@FUZZ
def test_client_header_round_trip(key, tag, dc, seed, first, up, down) -> None:
    header, encryptor, decryptor = make_client(key, tag, dc, seed, first)
    check_generated(header)
    assert not never_a_header(header)
    secret = Secret("k", key)
    others = [Secret("o", k) for k in (bytes(16), OTHER) if k != key]
    stream = parse_client_header(header, [others[0], secret, *others[1:]])
    assert (stream.secret, stream.tag, stream.dc) == (secret, tag, dc)
    # client→proxy: the decryptor continues the client's keystream after the header
    assert stream.decryptor.update(encryptor.update(up)) == up
    # proxy→client: the keys handed back are the ones the client decrypts with
    assert decryptor.update(ctr(stream.encrypt_key, stream.encrypt_iv).update(down)) == down
    # independent key schedule (PROTOCOLS.md)
    r = header[8:56][::-1]
    assert stream.encrypt_key == hashlib.sha256(r[:32] + key).digest()
    assert stream.encrypt_iv == r[32:48]
    plain = ctr(hashlib.sha256(header[8:40] + key).digest(), header[40:56]).update(header)
    assert plain[56:60] == tag and int.from_bytes(plain[60:62], "little", signed=True) == dc


@given(key=keys, other=keys, tag=tags, dc=dcs, seed=st.integers(0, 2**32))
@FUZZ
def test_client_header_refusals(key, other, tag, dc, seed) -> None:
    header = make_client(key, tag, dc, seed)[0]
    if other != key:
        with pytest.raises(HandshakeError) as info:
            parse_client_header(header, [Secret("o", other)])
        assert info.value.reason == "unknown-secret"
    allowed = [t for t in TAGS if t != tag]
    with pytest.raises(HandshakeError) as info:
        parse_client_header(header, [Secret("k", key)], allowed)
    assert info.value.reason == "bad-tag"
    with pytest.raises(HandshakeError) as info:
        parse_client_header(header[:63], [Secret("k", key)])
    assert info.value.reason == "short-header"


# ---------------------------------------------------------------------------------------------
# 5. obfuscated2: dc_header, plain and fast mode
# ---------------------------------------------------------------------------------------------


@given(
    key=keys,
    tag=tags,
    dc=dcs,
    seed=st.integers(0, 2**32),
    first=header_candidates(),
    fast=st.booleans(),
    up=st.binary(max_size=300),
    down=st.binary(max_size=300),
)
@FUZZ
def test_dc_header(key, tag, dc, seed, first, fast, up, down) -> None:
    header, _, client_decryptor = make_client(key, tag, dc, seed)
    stream = parse_client_header(header, [Secret("k", key)])
    with seeded(obfs2, seed + 1, first):
        if fast:
            out = dc_header(stream.tag, stream.dc, stream.encrypt_key, stream.encrypt_iv)
        else:
            out = dc_header(stream.tag, stream.dc)
    check_generated(out.header)
    # The DC's view: no secret, key = h[8:40], IV = h[40:56], the whole 64 bytes decrypted.
    dc_in = ctr(out.header[8:40], out.header[40:56])
    plain = dc_in.update(out.header)
    assert plain[56:60] == tag
    assert int.from_bytes(plain[60:62], "little", signed=True) == dc
    assert dc_in.update(out.encryptor.update(up)) == up  # upload counter continues at 64
    r = out.header[8:56][::-1]
    dc_reply = ctr(r[:32], r[32:48]).update(down)
    if fast:
        assert out.decryptor is None
        assert client_decryptor.update(dc_reply) == down  # forwarded untouched
    else:
        assert out.decryptor is not None
        assert out.decryptor.update(dc_reply) == down


# ---------------------------------------------------------------------------------------------
# 6. never_a_header
# ---------------------------------------------------------------------------------------------


@given(
    method=st.sampled_from(HTTP_METHODS),
    rest=st.sampled_from([b" / HTTP/1.1\r\n", b" * HTTP/1.0\r\nHost: x\r\n\r\n", b" "])
    | st.binary(max_size=80).map(lambda b: b" " + b),
)
@FUZZ
def test_never_a_header_for_http(method: bytes, rest: bytes) -> None:
    assert never_a_header(method + rest)
    assert never_a_header(b"\xef" + rest)  # the unobfuscated abridged transport


@given(key=keys, tag=tags, dc=dcs, seed=st.integers(0, 2**32), first=header_candidates())
@FUZZ
def test_never_a_header_is_false_for_client_headers(key, tag, dc, seed, first) -> None:
    header = make_client(key, tag, dc, seed, first)[0]
    # The relay asks with whatever prefix has arrived so far.
    assert not any(never_a_header(header[:n]) for n in range(65))
