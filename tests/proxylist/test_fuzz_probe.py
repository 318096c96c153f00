"""Hypothesis fuzz of the prober's parsers (proxylist.probe): the fake-TLS server response, the
transport frame reader, the ``resPQ`` parser and the whole client conversation.

Arbitrary bytes may only ever raise ``ProbeError`` or ask for more data; nothing the fuzzer makes
is accepted, because acceptance needs an HMAC under the key or our random nonce. Valid answers
come from the relay's own server code (``relay.faketls``) and the fake DC, and every one-byte
mutation of a server response is refused (the HMAC covers every byte). A ``resPQ`` carries
fields nobody can check before the DH exchange (message id, server nonce, pq, fingerprints), so
there the property is narrower: a mutation of any checked byte is refused.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxylist.errors import ProbeError
from proxylist.model import Relay
from proxylist.probe import (
    INTERMEDIATE,
    MAX_FRAME,
    NEED_DATA,
    PADDED,
    NeedData,
    ProbeClient,
    ServerResponse,
    StagePassed,
    client_hello,
    parse_res_pq,
    parse_server_response,
    read_frame,
)
from relay import Secret, faketls
from tests.relay.fakedc import make_res_pq

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")
DOMAIN = "example.com"
NOW = 1_800_000_000.0
NONCE = bytes(range(16))
HELLO = client_hello(KEY, DOMAIN, NOW, random.Random(0).randbytes)
RANDOM = HELLO[11:43]
_PARSED = faketls.parse_client_hello(HELLO, [Secret("m", KEY)], NOW)
RESPONSE = faketls.server_hello(_PARSED, 2600)
RES_PQ = make_res_pq(NONCE)
# resPQ bytes a client checks: auth_key_id, length, constructor, nonce, vector header.
CHECKED = {*range(0, 8), *range(16, 40), *range(68, 76)}


def rejects(call: Any) -> bool:
    """True when ``call()`` refuses with ProbeError or asks for more data."""
    try:
        return call() is NEED_DATA
    except ProbeError as exc:
        assert exc.detail and str(exc)
        return True


def seeded(seed: int) -> Any:
    return random.Random(seed).randbytes


def entry(mode: str) -> Relay:
    return Relay("r", "127.0.0.1", 443, KEY, mode, DOMAIN if mode == "ee" else None)  # type: ignore[arg-type]


def test_the_valid_vectors_are_valid() -> None:
    assert parse_server_response(RESPONSE, KEY, RANDOM) == ServerResponse(len(RESPONSE), 2600)
    assert parse_res_pq(RES_PQ, NONCE).nonce == NONCE
    assert len(RES_PQ) == 84


# -- the fake-TLS server response ----------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_are_never_a_server_response(data: bytes) -> None:
    assert rejects(lambda: parse_server_response(data, KEY, RANDOM))


@FUZZ
@given(st.integers(0, len(RESPONSE)), st.binary(max_size=6000))
def test_genuine_prefix_then_anything_accepts_only_the_genuine_response(
    keep: int, tail: bytes
) -> None:
    data = RESPONSE[:keep] + tail
    try:
        result = parse_server_response(data, KEY, RANDOM)
    except ProbeError:
        return
    if isinstance(result, ServerResponse):
        assert data[: result.size] == RESPONSE


@FUZZ
@given(st.integers(0, len(RESPONSE) - 1), st.integers(1, 255), st.binary(max_size=64))
def test_every_one_byte_mutation_of_a_response_is_refused(
    index: int, flip: int, tail: bytes
) -> None:
    mutated = bytearray(RESPONSE)
    mutated[index] ^= flip
    assert rejects(lambda: parse_server_response(bytes(mutated) + tail, KEY, RANDOM))


@FUZZ
@given(st.integers(0, len(RESPONSE) - 1))
def test_a_genuine_response_cut_short_asks_for_more(keep: int) -> None:
    assert parse_server_response(RESPONSE[:keep], KEY, RANDOM) is NEED_DATA


# -- frames and resPQ ----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=MAX_FRAME + 64), st.sampled_from([PADDED, INTERMEDIATE]))
def test_frame_reader_never_overruns(data: bytes, tag: bytes) -> None:
    try:
        found = read_frame(data, tag)
    except ProbeError as exc:
        assert exc.detail == "bad resPQ"
        return
    if not isinstance(found, NeedData):
        payload, used = found
        assert used <= len(data) and len(payload) <= used - 4
        assert tag == INTERMEDIATE or len(payload) % 4 == 0


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_never_a_res_pq(data: bytes) -> None:
    with pytest.raises(ProbeError) as caught:
        parse_res_pq(data, NONCE)
    assert caught.value.detail == "bad resPQ"


@FUZZ
@given(st.integers(0, len(RES_PQ) - 1), st.integers(1, 255))
def test_a_mutated_res_pq_is_refused_in_every_checked_byte(index: int, flip: int) -> None:
    mutated = bytearray(RES_PQ)
    mutated[index] ^= flip
    try:
        result = parse_res_pq(bytes(mutated), NONCE)
    except ProbeError:
        return
    assert index not in CHECKED and result.nonce == NONCE


@FUZZ
@given(st.integers(0, len(RES_PQ) - 1), st.binary(min_size=1, max_size=40))
def test_a_res_pq_cut_short_or_extended_is_refused(keep: int, tail: bytes) -> None:
    for changed in (RES_PQ[:keep], RES_PQ + tail):
        with pytest.raises(ProbeError):
            parse_res_pq(changed, NONCE)


# -- the whole conversation ----------------------------------------------------------------------


@FUZZ
@given(
    st.sampled_from(["ee", "dd", "classic"]),
    st.integers(0, 2**32),
    st.lists(st.binary(min_size=1, max_size=700), max_size=8),
)
def test_arbitrary_bytes_never_pass_a_stage_and_eof_always_ends_it(
    mode: str, seed: int, chunks: list[bytes]
) -> None:
    client = ProbeClient(entry(mode), now=NOW, entropy=seeded(seed))
    for chunk in [*chunks, b""]:
        client.receive_data(chunk)
        try:
            event = client.next_event()
        except ProbeError:
            return
        assert event is NEED_DATA
    pytest.fail("EOF did not end the probe")


@FUZZ
@given(st.integers(0, 2**32), st.lists(st.binary(min_size=1, max_size=700), max_size=8))
def test_after_a_genuine_hello_arbitrary_records_never_pass_dc(
    seed: int, chunks: list[bytes]
) -> None:
    client = ProbeClient(entry("ee"), now=NOW, entropy=seeded(seed))
    hello = faketls.parse_client_hello(client.initial, [Secret("m", KEY)], NOW)
    client.receive_data(faketls.server_hello(hello, 100))
    assert isinstance(client.next_event(), StagePassed)
    for chunk in [*chunks, b""]:
        client.receive_data(chunk)
        try:
            assert client.next_event() is NEED_DATA
        except ProbeError:
            return
    pytest.fail("EOF did not end the probe")


@FUZZ
@given(st.lists(st.integers(1, len(RESPONSE)), max_size=6), st.integers(0, 2**32))
def test_a_genuine_response_passes_however_it_is_split(cuts: list[int], seed: int) -> None:
    client = ProbeClient(entry("ee"), now=NOW, entropy=seeded(seed))
    hello = faketls.parse_client_hello(client.initial, [Secret("m", KEY)], NOW)
    response = faketls.server_hello(hello, 3000)
    points = sorted({0, *cuts, len(response)})
    events = []
    for start, end in zip(points, points[1:], strict=False):
        client.receive_data(response[start:end])
        events.append(client.next_event())
    assert events[-1] == StagePassed("tls-hmac", events[-1].send)  # type: ignore[union-attr]
    assert all(e is NEED_DATA for e in events[:-1])


@FUZZ
@given(
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-."), min_size=1, max_size=253),
    st.floats(0, 2**32 - 1),
    st.integers(0, 2**32),
)
def test_every_client_hello_is_one_the_relay_accepts(domain: str, now: float, seed: int) -> None:
    hello = client_hello(KEY, domain, now, seeded(seed))
    assert len(hello) >= 517
    parsed = faketls.parse_client_hello(hello, [Secret("m", KEY)], now, 1e10, 1e10)
    assert parsed.sni == domain and parsed.timestamp == int(now)
