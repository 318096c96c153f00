"""Fuzz tests for the relay's fake-TLS core (``relay.faketls``): the ClientHello parsers, the
record reader and ``wrap``, against PROTOCOLS.md "Fake-TLS" (obfuscated2 is in
``test_fuzz_obfs2.py``).

Every parser gets arbitrary input, input behind a valid header, and mutations of valid input.
It may refuse only with ``HandshakeError``; whatever it accepts is checked against an
independent implementation of the wire rules (the HMAC and time window of a ClientHello)
written here from PROTOCOLS.md, not imported from the code under test.

Hypothesis is derandomized, and the modules' ``os.urandom`` is replaced by a seeded source (with
hypothesis-chosen first candidates), so every example reproduces exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import faketls
from relay.errors import HandshakeError
from relay.faketls import ClientHello, RecordReader, hello_length, parse_client_hello, wrap
from relay.obfs2 import Secret
from tests.relay import tlsclient
from tests.relay.fuzzkit import (
    DOMAIN,
    FEW,
    FUZZ,
    GREASE,
    KEY,
    MAIN,
    MAX_PAYLOAD,
    MAX_PENDING,
    NOW,
    OTHER,
    SECRETS,
    T,
    seeded,
)


def valid_hello(key: bytes = KEY, timestamp: int = NOW, seed: int = 0) -> bytes:
    with seeded(tlsclient, seed):
        return tlsclient.client_hello(key, DOMAIN, timestamp)


def sign(record: bytes, key: bytes, timestamp: int) -> bytes:
    """Put the fake-TLS digest into ``record`` (PROTOCOLS.md "Client hello")."""
    rec = bytearray(record)
    rec[11:43] = bytes(32)
    mac = hmac.new(key, bytes(rec), hashlib.sha256).digest()
    rec[11:43] = bytes(
        a ^ b for a, b in zip(mac, bytes(28) + timestamp.to_bytes(4, "little"), strict=True)
    )
    return bytes(rec)


def signed_timestamp(record: bytes, key: bytes) -> int | None:
    """The timestamp when ``record`` carries a valid digest under ``key``, else None."""
    if len(record) < 43:
        return None
    zeroed = record[:11] + bytes(32) + record[43:]
    mac = hmac.new(key, zeroed, hashlib.sha256).digest()
    xored = bytes(a ^ b for a, b in zip(record[11:43], mac, strict=True))
    return int.from_bytes(xored[28:], "little") if xored[:28] == bytes(28) else None


def parse_hello(
    record: bytes,
    secrets: Sequence[Secret] = SECRETS,
    now: float = NOW,
    past: float = 600,
    future: float = 1200,
) -> ClientHello | None:
    """``parse_client_hello``, None on HandshakeError; any other exception propagates."""
    try:
        hello = parse_client_hello(record, secrets, now, past, future)
    except HandshakeError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return None
    check_accepted_hello(record, hello, secrets, now, past, future)
    return hello


def check_accepted_hello(
    record: bytes,
    hello: ClientHello,
    secrets: Sequence[Secret],
    now: float,
    past: float,
    future: float,
) -> None:
    """Whatever parse_client_hello accepts must verify independently and be well-formed."""
    assert record[:3] == b"\x16\x03\x01"
    assert hello.secret in secrets
    timestamp = signed_timestamp(record, hello.secret.key)
    assert timestamp is not None, "accepted a record whose digest does not verify"
    assert timestamp == hello.timestamp
    assert now - past < timestamp < now + future
    assert hello.random == record[11:43]
    assert isinstance(hello.session_id, bytes) and len(hello.session_id) == 32
    assert isinstance(hello.cipher_suite, bytes) and len(hello.cipher_suite) == 2
    assert hello.cipher_suite not in GREASE
    assert hello.sni is None or isinstance(hello.sni, str)


def hello_length_or_none(head: bytes) -> int | None:
    try:
        length = hello_length(head)
    except HandshakeError:
        return None
    assert head[:3] == b"\x16\x03\x01"
    assert length == 5 + int.from_bytes(head[3:5], "big")
    assert length >= 512
    return length


# ---------------------------------------------------------------------------------------------
# 1. ClientHello: hello_length and parse_client_hello
# ---------------------------------------------------------------------------------------------

TLS_HEADER = b"\x16\x03\x01"


@st.composite
def behind_tls_header(draw: st.DrawFn) -> bytes:
    """Random bytes behind ``16 03 01 LL LL``, with LL usually the true length."""
    body = draw(st.binary(min_size=0, max_size=700))
    if draw(st.booleans()):
        length = len(body)
    else:
        length = draw(st.integers(0, 0xFFFF) | st.sampled_from([506, 507, 511, 512, 16384]))
    return TLS_HEADER + length.to_bytes(2, "big") + body


@given(st.binary(max_size=700) | behind_tls_header())
@FUZZ
def test_hello_parsers_only_raise_handshake_error(data: bytes) -> None:
    hello_length_or_none(data[:5])
    hello_length_or_none(data)
    assert parse_hello(data) is None  # random bytes never carry our HMAC


def test_hello_length_bounds() -> None:
    assert hello_length(TLS_HEADER + b"\x02\x00") == 517
    assert hello_length(TLS_HEADER + (507).to_bytes(2, "big")) == 512
    for head in (
        TLS_HEADER + (506).to_bytes(2, "big"),
        TLS_HEADER + b"\x02",
        b"",
        b"\x16\x03\x03\x02\x00",
    ):
        with pytest.raises(HandshakeError):
            hello_length(head)


def test_valid_hello_is_accepted_by_the_right_secret() -> None:
    record = valid_hello()
    hello = parse_hello(record)
    assert hello is not None
    assert hello.secret == MAIN
    assert hello.sni == DOMAIN
    assert hello.session_id == record[44:76]
    assert hello.cipher_suite == b"\x13\x01"  # the first suite, 0a0a, is GREASE
    assert hello.timestamp == NOW
    with pytest.raises(HandshakeError) as info:
        parse_client_hello(record, [Secret("other", OTHER)], NOW)
    assert info.value.reason == "bad-hmac"


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after 1-4 edits, with positions biased to the header, the digest and its
    timestamp, the session id, the suites and the SNI."""
    rec = bytearray(base)
    hot = st.sampled_from([0, 1, 2, 3, 4, 5, 9, 10, 11, 37, 38, 39, 40, 41, 42, 43, 44, 76, 77, 78])
    digest = st.integers(11, 42)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(hot | digest | st.integers(0, len(rec)))
        pos = min(pos, len(rec))
        kind = draw(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "retime"])
        )
        if kind == "retime":  # move the signed timestamp, often staying in the window
            delta = draw(st.integers(-1300, 700))
            change = (NOW ^ (NOW + delta)).to_bytes(4, "little")
            rec[39:43] = bytes(a ^ b for a, b in zip(rec[39:43], change, strict=False))
        elif kind == "flip" and pos < len(rec):
            rec[pos] ^= draw(st.integers(1, 255))
        elif kind == "set" and pos < len(rec):
            rec[pos] = draw(st.sampled_from([0, 1, 0x20, 0xFF]) | st.integers(0, 255))
        elif kind == "insert":
            rec[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del rec[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del rec[pos:]
        else:
            rec += draw(st.binary(min_size=1, max_size=8))
    return bytes(rec)


BASE_HELLO = valid_hello()


@given(mutations(BASE_HELLO))
@FUZZ
def test_mutated_hello_is_accepted_only_if_still_signed(record: bytes) -> None:
    hello_length_or_none(record[:5])
    hello = parse_hello(record)
    if hello is None:
        return
    # Only the 4 bytes carrying the timestamp are outside the HMAC and not fixed by it.
    assert record[:39] == BASE_HELLO[:39] and record[43:] == BASE_HELLO[43:]
    assert hello.secret == MAIN
    assert (hello.sni, hello.session_id) == (DOMAIN, BASE_HELLO[44:76])


def test_every_digest_bit_matters() -> None:
    """Flipping any one bit of bytes 11..39 breaks the digest; in 39..43 it moves the clock."""
    for pos in range(11, 43):
        for bit in range(8):
            record = bytearray(BASE_HELLO)
            record[pos] ^= 1 << bit
            hello = parse_hello(bytes(record), past=2**32, future=2**32)
            assert (hello is not None) == (pos >= 39), (pos, bit)
            if hello is not None:
                assert hello.timestamp == NOW ^ (1 << (bit + 8 * (pos - 39)))


@given(mutations(BASE_HELLO), st.integers(NOW - 599, NOW + 1199))
@FUZZ
def test_mutated_then_resigned_hello_is_well_formed_if_accepted(record: bytes, ts: int) -> None:
    """Re-signing after the mutation gets past the HMAC into the field parser."""
    if len(record) < 43:
        assert parse_hello(record) is None
        return
    record = sign(record, KEY, ts)
    hello = parse_hello(record)
    if (
        record[:3] == TLS_HEADER
        and record[3:5] == BASE_HELLO[3:5]
        and record[5:] == (BASE_HELLO[5:11] + record[11:43] + BASE_HELLO[43:])
    ):
        assert hello is not None  # untouched structure, fresh digest: must pass


GARBLE = ("sid_len", "sid", "suites_len", "compression", "ext_len", "msg_type", "size", "cut")


@st.composite
def signed_garbage(draw: st.DrawFn) -> bytes:
    """A signed ``16 03 01`` record: a ClientHello skeleton with random suites and extensions
    (some of them server_name with lying lengths), and none, one or all fields garbled."""
    garbled = draw(st.sampled_from([(), (), *((g,) for g in GARBLE), GARBLE]))

    def field(name: str, good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> T:
        return draw(bad if name in garbled else good)

    sid_len = field("sid_len", st.just(32), st.sampled_from([0, 31, 33, 255]) | st.integers(0, 255))
    sid = field("sid", st.binary(min_size=32, max_size=32), st.binary(max_size=40))
    suites = draw(st.binary(max_size=12) | st.sampled_from([b"", b"\x0a", b"\x0a\x0a\x1a\x1a"]))
    suites_len = field("suites_len", st.just(len(suites)), st.integers(0, 0xFFFF))
    server_name = st.builds(
        lambda name, lie: struct.pack(">HBH", len(name) + 3, 0, max(0, len(name) + lie)) + name,
        st.binary(max_size=20) | st.sampled_from([b"Example.COM", "\u00e9.fr".encode()]),
        st.sampled_from([0, 0, -3, -1, 1, 3]),
    )
    ext = draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"\x00\x00", b"\x00\x15", b"\xaa\xaa"]),
                st.binary(max_size=30) | server_name,
                st.sampled_from([0, 0, 0, -2, -1, 1, 2]),
            ),
            max_size=4,
        )
    )
    exts = b"".join(
        kind + max(0, len(body) + lie).to_bytes(2, "big") + body for kind, body, lie in ext
    )
    ext_len = field("ext_len", st.just(len(exts)), st.integers(0, 0xFFFF))
    compression = field(
        "compression", st.just(b"\x01\x00"), st.sampled_from([b"\x00", b"", b"\x05\x00", b"\xff"])
    )
    body = (
        b"\x03\x03" + bytes(32) + bytes([sid_len]) + sid
        + suites_len.to_bytes(2, "big") + suites + compression
        + ext_len.to_bytes(2, "big") + exts
    )  # fmt: skip
    msg_type = field("msg_type", st.just(0x01), st.integers(0, 255))
    handshake = bytes([msg_type]) + len(body).to_bytes(3, "big") + body
    size = field("size", st.sampled_from([512, 517, 600]), st.integers(0, 700))
    handshake += bytes(max(0, size - 5 - len(handshake)))
    cut = field("cut", st.just(len(handshake)), st.integers(0, len(handshake)))
    record = TLS_HEADER + len(handshake).to_bytes(2, "big") + handshake[:cut]
    if len(record) < 43:
        return record
    return sign(record, KEY, draw(st.integers(NOW - 1199, NOW + 599)))


@given(signed_garbage())
@FUZZ
def test_signed_garbage_fields_are_well_formed_if_accepted(record: bytes) -> None:
    hello = parse_hello(record)
    if hello is not None:
        assert hello.secret == MAIN
        assert hello.session_id == record[44:76]


@given(
    delta=st.integers(-3000, 3000) | st.sampled_from([-600, -599, 1199, 1200, 0]),
    past=st.integers(0, 2000) | st.just(600),
    future=st.integers(0, 2000) | st.just(1200),
    seed=st.integers(0, 2**32),
)
@FEW
def test_time_window(delta: int, past: int, future: int, seed: int) -> None:
    record = valid_hello(timestamp=NOW + delta, seed=seed)
    inside = -past < delta < future
    try:
        hello = parse_client_hello(record, SECRETS, NOW, past, future)
    except HandshakeError as exc:
        assert not inside
        assert exc.reason == "time-skew"
    else:
        assert inside
        check_accepted_hello(record, hello, SECRETS, NOW, past, future)


# ---------------------------------------------------------------------------------------------
# 2 and 3. RecordReader and wrap
# ---------------------------------------------------------------------------------------------


def model_records(stream: bytes) -> tuple[bytes, bool]:
    """(payloads of the complete leading records, whether a bad record header was seen)."""
    out, pos = b"", 0
    while len(stream) - pos >= 5:
        kind, version = stream[pos], stream[pos + 1 : pos + 3]
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if kind not in (0x14, 0x17) or version != b"\x03\x03" or length > MAX_PENDING - 5:
            return out, True
        if pos + 5 + length > len(stream):
            break
        if kind == 0x17:
            out += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out, False


def chunks(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def feed_all(reader: RecordReader, parts: Sequence[bytes]) -> tuple[bytes, bool]:
    """Feed ``parts``; (output so far, whether HandshakeError stopped it)."""
    out = b""
    for part in parts:
        try:
            out += reader.feed(part)
        except HandshakeError as exc:
            assert exc.reason == "bad-record"
            return out, True
        assert 0 <= reader.pending <= MAX_PENDING
    return out, False


def assert_reads_as_the_model(stream: bytes, cuts: Sequence[int]) -> None:
    """``stream`` fed in pieces cut at ``cuts`` gives what ``model_records`` says, and fails
    exactly when it does (having given a prefix of the model's output by then)."""
    out, failed = feed_all(RecordReader(), chunks(stream, cuts))
    want, bad = model_records(stream)
    assert failed == bad
    if failed:
        assert want.startswith(out)
    else:
        assert out == want


@st.composite
def record_piece(draw: st.DrawFn) -> bytes:
    """A record header (valid or nearly), or raw bytes."""
    kind = draw(st.sampled_from([0x17, 0x17, 0x14, 0x16, 0x15, 0x00]))
    version = draw(st.sampled_from([b"\x03\x03", b"\x03\x03", b"\x03\x01", b"\x00\x00"]))
    length = draw(st.integers(0, 40) | st.sampled_from([16384, 16640, 16641, 0xFFFF]))
    return bytes([kind]) + version + length.to_bytes(2, "big") + draw(st.binary(max_size=45))


streams = st.lists(record_piece() | st.binary(max_size=20), max_size=8).map(b"".join)
cut_lists = st.lists(st.integers(0, 2000), max_size=10)


@given(st.binary(max_size=2000) | streams, cut_lists)
@FUZZ
def test_record_reader_on_arbitrary_streams(stream: bytes, cuts: list[int]) -> None:
    assert_reads_as_the_model(stream, cuts)


@st.composite
def valid_record_stream(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(stream of 14/17 records with payloads <= 16384, the 17 payloads concatenated)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    stream, payloads = [], []
    for kind, size in draw(
        st.lists(
            st.tuples(
                st.sampled_from([0x17, 0x17, 0x14]),
                st.integers(0, 64) | st.sampled_from([16383, 16384]) | st.integers(0, MAX_PAYLOAD),
            ),
            max_size=6,
        )
    ):
        payload = b"\x01" if kind == 0x14 and size else rng.randbytes(size)
        stream.append(bytes([kind]) + b"\x03\x03" + len(payload).to_bytes(2, "big") + payload)
        if kind == 0x17:
            payloads.append(payload)
    return b"".join(stream), b"".join(payloads)


@given(valid_record_stream(), st.lists(st.integers(0, 6 * MAX_PAYLOAD), max_size=12))
@FUZZ
def test_record_reader_split_anywhere(records: tuple[bytes, bytes], cuts: list[int]) -> None:
    stream, want = records
    reader = RecordReader()
    out, failed = feed_all(reader, chunks(stream, cuts))
    assert not failed
    assert out == want
    assert reader.pending == 0


@st.composite
def record_runs(draw: st.DrawFn) -> bytes:
    """Runs of equal records, as clients send bulk data (tdlib: 2,878-byte payloads), longer
    than the reader cuts in one step, with CCS records between them and maybe one header in a
    run changed (its length, type or version), which the reader must see."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    stream = bytearray()
    for size, count in draw(
        st.lists(
            st.tuples(st.sampled_from([0, 1, 7, 2878, 16384]), st.integers(1, 200)), max_size=4
        )
    ):
        header = b"\x17\x03\x03" + size.to_bytes(2, "big")
        stream += b"".join(header + rng.randbytes(size) for _ in range(count))
        stream += faketls.CCS_RECORD * draw(st.integers(0, 1))
    if stream and draw(st.booleans()):
        at = draw(st.integers(0, len(stream) - 1))
        stream[at] ^= 1 << draw(st.integers(0, 7))  # in a header or a payload
    return bytes(stream)


@given(record_runs(), st.lists(st.integers(0, 600_000), max_size=6))
@FEW
def test_record_reader_on_runs_of_equal_records(stream: bytes, cuts: list[int]) -> None:
    assert_reads_as_the_model(stream, cuts)


def test_record_reader_byte_by_byte_and_limits() -> None:
    stream = faketls.CCS_RECORD + wrap(b"hello") + b"\x17\x03\x03\x00\x00" + wrap(b"!")
    reader = RecordReader()
    assert b"".join(reader.feed(stream[i : i + 1]) for i in range(len(stream))) == b"hello!"
    reader = RecordReader()
    assert reader.feed(b"\x17\x03\x03\x41\x00") == b"" and reader.pending == 5  # 16640: allowed
    for bad in (b"\x17\x03\x03\x41\x01", b"\x16\x03\x03\x00\x00", b"\x17\x03\x01\x00\x00"):
        with pytest.raises(HandshakeError):
            RecordReader().feed(bad)


@given(
    size=st.integers(0, 100_000)
    | st.sampled_from([0, 1, 16383, 16384, 16385, 32768, 32769, 100_000]),
    record=st.sampled_from([MAX_PAYLOAD, 2878, 1]),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.integers(0, 100_100), max_size=8),
)
@FEW
def test_wrap_round_trip(size: int, record: int, seed: int, cuts: list[int]) -> None:
    data = random.Random(seed).randbytes(size)
    wrapped = wrap(data) if record == MAX_PAYLOAD else wrap(data, record)
    pos, count = 0, 0
    while pos < len(wrapped):
        assert wrapped[pos : pos + 3] == b"\x17\x03\x03"
        length = int.from_bytes(wrapped[pos + 3 : pos + 5], "big")
        assert length <= record
        pos, count = pos + 5 + length, count + 1
    assert pos == len(wrapped)
    assert count == max(1, -(-size // record))
    reader = RecordReader()
    out, failed = feed_all(reader, chunks(wrapped, cuts))
    assert not failed and out == data and reader.pending == 0
