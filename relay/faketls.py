"""Fake-TLS (``ee`` secrets): ClientHello validation, ServerHello, and record framing. Sans-IO.

Theory of operation
-------------------
The client sends one TLS 1.3-looking ClientHello record whose 32-byte "random" (record bytes
11..43) is ``HMAC-SHA256(key, record with the random zeroed) XOR (zeros(28) ‖ timestamp LE)``.
So only a client that knows the secret can make it, it carries the client's clock, and it can be
replayed only byte for byte (hence the replay cache keyed on the random). PROTOCOLS.md
"Fake-TLS" has the layout; mtg's ``faketls`` package and tdlib's ``TlsInit`` are the public
implementations this follows.

The server answers with exactly three records (ServerHello, ChangeCipherSpec, one
ApplicationData) whose ServerHello random is ``HMAC(key, client random ‖ response with the
random zeroed)``: the client checks it and so knows it reached the real relay. After that both
sides wrap the obfuscated2 stream in ``17 03 03`` records.

Nothing here reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import operator
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from relay.errors import HandshakeError
from relay.obfs2 import Secret

RECORD_HEADER = 5
MIN_HELLO = 512
MAX_RECORD_PAYLOAD = 16384
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
APPDATA_PREFIX = b"\x17\x03\x03"
_HEADER = struct.Struct(">BHH")
_FULL_HEADER = APPDATA_PREFIX + MAX_RECORD_PAYLOAD.to_bytes(2, "big")
_RANDOM = slice(11, 43)
_MAX_RUN = 96
"""Records cut in one step at most: a 256 KiB read of tdlib's 2,878-byte records fits."""
_Cutter = Callable[[memoryview], Sequence[memoryview]]
_GREASE = {bytes([b, b]) for b in range(0x0A, 0x100, 0x10)}


@dataclass(frozen=True)
class ClientHello:
    """A validated ClientHello."""

    secret: Secret
    random: bytes
    """The client's 32-byte digest: the replay-cache key and the input of our reply's HMAC."""
    session_id: bytes
    cipher_suite: bytes
    """The suite to echo: the client's first non-GREASE one."""
    sni: str | None
    timestamp: int


def hello_length(head: bytes) -> int:
    """Total length of the ClientHello record from its first 5 bytes, or raise."""
    if len(head) < RECORD_HEADER or head[:3] != b"\x16\x03\x01":
        raise HandshakeError("not-tls", "first bytes are not a TLS handshake record")
    length = int.from_bytes(head[3:5], "big")
    if length + RECORD_HEADER < MIN_HELLO:
        raise HandshakeError("not-tls", f"ClientHello record of {length} bytes is too short")
    return RECORD_HEADER + length


def _digest_matches(record: bytes, key: bytes) -> int | None:
    """The timestamp when ``record``'s random is our HMAC under ``key``, else None."""
    zeroed = record[:11] + bytes(32) + record[43:]
    mac = hmac.new(key, zeroed, hashlib.sha256).digest()
    xored = bytes(a ^ b for a, b in zip(record[_RANDOM], mac, strict=True))
    if not hmac.compare_digest(xored[:28], bytes(28)):
        return None
    return int.from_bytes(xored[28:], "little")


def parse_client_hello(
    record: bytes,
    secrets: Sequence[Secret],
    now: float,
    skew_past: float = 600,
    skew_future: float = 1200,
) -> ClientHello:
    """Validate a whole ClientHello record against the secrets and the time window.

    The window is ``now - skew_past < ts < now + skew_future``: by default a client clock may
    be 10 minutes behind or 20 minutes ahead (PROTOCOLS.md: -20 min < now - ts < +10 min).
    Some clients send a small uptime instead of the clock; the window refuses them, on purpose:
    accepting them would switch the window off and leave only the replay cache, which a
    restart empties.
    """
    hello_length(record[:5])
    fields = _hello_fields(record)
    for secret in secrets:
        timestamp = _digest_matches(record, secret.key)
        if timestamp is None:
            continue
        if not now - skew_past < timestamp < now + skew_future:
            raise HandshakeError("time-skew", f"client clock is {timestamp - now:+.0f} s off")
        session_id, suite, sni = fields
        return ClientHello(secret, record[_RANDOM], session_id, suite, sni, timestamp)
    raise HandshakeError("bad-hmac", "no configured secret matches the ClientHello digest")


def _hello_fields(record: bytes) -> tuple[bytes, bytes, str | None]:
    """(session id, chosen cipher suite, SNI) from a ClientHello; HandshakeError if malformed."""
    try:
        if record[5] != 0x01:
            raise HandshakeError("not-tls", "record is not a ClientHello")
        pos = 43
        sid_len = record[pos]
        session_id = record[pos + 1 : pos + 1 + sid_len]
        pos += 1 + sid_len
        suites_len = int.from_bytes(record[pos : pos + 2], "big")
        suites = record[pos + 2 : pos + 2 + suites_len]
        pos += 2 + suites_len
        pos += 1 + record[pos]  # compression methods
        ext_end = pos + 2 + int.from_bytes(record[pos : pos + 2], "big")
        sni = _find_sni(record, pos + 2, min(ext_end, len(record)))
    except IndexError:
        raise HandshakeError("not-tls", "truncated ClientHello") from None
    if sid_len != 32 or len(session_id) != 32:
        raise HandshakeError("not-tls", "ClientHello needs a 32-byte session id")
    suite = next(
        (
            suites[i : i + 2]
            for i in range(0, len(suites) - 1, 2)
            if suites[i : i + 2] not in _GREASE
        ),
        b"\x13\x01",
    )
    return session_id, suite, sni


def _find_sni(record: bytes, pos: int, end: int) -> str | None:
    while pos + 4 <= end:
        ext_type = record[pos : pos + 2]
        ext_len = int.from_bytes(record[pos + 2 : pos + 4], "big")
        body = record[pos + 4 : pos + 4 + ext_len]
        if ext_type == b"\x00\x00" and len(body) >= 5 and body[2] == 0:
            name_len = int.from_bytes(body[3:5], "big")
            return body[5 : 5 + name_len].decode("ascii", errors="replace").lower()
        pos += 4 + ext_len
    return None


def server_hello(hello: ClientHello, appdata_size: int) -> bytes:
    """The three-record reply tdlib expects, with its HMAC in the ServerHello random."""
    extensions = (
        b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: TLS 1.3
        + b"\x00\x33\x00\x24\x00\x1d\x00\x20"  # key_share: x25519 ...
        + os.urandom(32)  # ... with a random "public key"
    )
    body = (
        b"\x03\x03" + bytes(32) + b"\x20" + hello.session_id + hello.cipher_suite + b"\x00"
        + len(extensions).to_bytes(2, "big") + extensions
    )  # fmt: skip
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    hello_record = b"\x16\x03\x03" + len(handshake).to_bytes(2, "big") + handshake
    appdata = APPDATA_PREFIX + appdata_size.to_bytes(2, "big") + os.urandom(appdata_size)
    response = bytearray(hello_record + CCS_RECORD + appdata)
    mac = hmac.new(hello.secret.key, hello.random + bytes(response), hashlib.sha256).digest()
    response[_RANDOM] = mac
    return bytes(response)


def wrap(data: bytes, record: int = MAX_RECORD_PAYLOAD) -> bytes:
    """Frame stream bytes as ``17 03 03`` records of at most ``record`` payload bytes each."""
    return b"".join(wrap_parts(data, record))


def wrap_parts(
    data: bytes | memoryview, record: int = MAX_RECORD_PAYLOAD
) -> list[bytes | memoryview]:
    """``wrap`` as a list of headers and views of ``data``, for one ``writev`` (no copies)."""
    view, step = memoryview(data), record
    header = (
        _FULL_HEADER if step == MAX_RECORD_PAYLOAD else APPDATA_PREFIX + step.to_bytes(2, "big")
    )
    size = len(view)
    count = size // step
    full = count * step
    parts: list[bytes | memoryview] = [header] * (2 * count)
    if count:
        parts[1::2] = _slices(step, count)(view)  # cut in C, as RecordReader does
    if full < size or not size:
        parts += (APPDATA_PREFIX + (size - full).to_bytes(2, "big"), view[full:])
    return parts


class RecordReader:
    """Turns the client's TLS records back into the stream they carry.

    ``feed(data)`` returns the payload bytes available so far. ChangeCipherSpec records are
    skipped; any other record type, or an oversized record, raises ``HandshakeError``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a record (bounded by one record)."""
        return len(self._buffer)

    def feed(self, data: bytes | memoryview) -> bytes:
        payloads = self.payloads(data)
        return bytes(payloads[0]) if len(payloads) == 1 else b"".join(payloads)

    def payloads(self, data: bytes | memoryview) -> list[bytes | memoryview]:
        """``feed`` without the join: the payloads in order, as views into ``data`` where they
        lie whole in it. The views are valid only as long as ``data`` is."""
        view = memoryview(data)
        payloads: list[bytes | memoryview] = []
        if self._buffer:  # finish the record a previous read left incomplete
            view = self._complete(view, payloads)
        pos, size = 0, len(view)
        while size - pos >= RECORD_HEADER:
            stride = RECORD_HEADER + _record_length(view, pos)
            if pos + stride > size:
                break
            if view[pos] != 0x17:  # ChangeCipherSpec: skipped
                pos += stride
                continue
            # A run of records with this one's header, checked and cut in C: clients send
            # bulk data in equal records (tdlib: 2,878 bytes), and a Python step per record
            # would cost more than the AES.
            count = min((size - pos) // stride, _MAX_RUN)
            rest = view[pos:]
            if count > 1:
                count = _run_length(rest, stride, count)
            payloads += _slices(stride - RECORD_HEADER, count, RECORD_HEADER)(rest)
            pos += count * stride
        self._buffer += view[pos:]  # a partial record waits for the rest (at most one record)
        return payloads

    def _complete(self, view: memoryview, payloads: list[bytes | memoryview]) -> memoryview:
        """Move bytes from ``view`` into the pending record; return what is left of ``view``."""
        buf = self._buffer
        if len(buf) < RECORD_HEADER:
            take = RECORD_HEADER - len(buf)
            buf += view[:take]
            view = view[take:]
            if len(buf) < RECORD_HEADER:
                return view
        missing = RECORD_HEADER + _record_length(buf) - len(buf)
        buf += view[:missing]
        if len(view) < missing:
            return view[len(view) :]
        if buf[0] == 0x17:
            payloads.append(bytes(buf[RECORD_HEADER:]))
        buf.clear()
        return view[missing:]


def _run_length(view: memoryview, stride: int, count: int) -> int:
    """How many of the ``count`` records of ``stride`` bytes at the start of ``view`` carry
    the first one's header. Each header byte is compared for all records at once, through
    a view that steps over the payloads (five views, not one per record)."""
    for at, want in enumerate(_columns(bytes(view[:RECORD_HEADER]), count)):
        found = view[at : count * stride : stride]
        if found != want[:count]:  # a different header ends the run: find it by halves
            column, low, high = found.tobytes(), 1, count  # the first low match, high do not
            while high - low > 1:
                mid = (low + high) // 2
                if column[:mid] == want[:mid]:
                    low = mid
                else:
                    high = mid
            count = low
    return count


@functools.lru_cache(maxsize=256)
def _columns(header: bytes, count: int) -> tuple[bytes, ...]:
    """Each byte of ``header`` repeated ``count`` times: what the stepped views should hold."""
    return tuple(bytes([byte]) * count for byte in header)


@functools.lru_cache(maxsize=512)  # ~3 MB at most: 512 x _MAX_RUN slices
def _slices(size: int, count: int, skip: int = 0) -> _Cutter:
    """A function of a view giving a tuple of ``count`` views of ``size`` bytes, each after
    ``skip`` bytes of the view (sliced in C, by one ``itemgetter``)."""
    if count == 1:
        one = slice(skip, skip + size)
        return lambda view: (view[one],)  # itemgetter of one slice gives no tuple
    stride = skip + size
    starts = range(skip, count * stride, stride)
    return cast(_Cutter, operator.itemgetter(*(slice(at, at + size) for at in starts)))


def _record_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The payload length from the record header at ``pos``, after checking its type and
    version (one ``unpack_from``, no slice: this runs once per record)."""
    kind, version, length = cast(tuple[int, int, int], _HEADER.unpack_from(buf, pos))
    if kind not in (0x14, 0x17) or version != 0x0303:
        raise HandshakeError("bad-record", f"unexpected TLS record type {kind:#04x}")
    if length > MAX_RECORD_PAYLOAD + 256:
        raise HandshakeError("bad-record", f"TLS record of {length} bytes is too long")
    return length
