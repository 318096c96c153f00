"""The prober's client side of an MTProto proxy handshake, sans-IO.

Theory of operation
-------------------
A probe proves two things about a relay (PROTOCOLS.md "Fake-TLS", "MTProto transport
obfuscation", "A full-path probe"):

* **tls-hmac** (``ee`` relays only). We send a ClientHello shaped like tdlib's (517 bytes,
  Chrome's extension order, GREASE, a real x25519 public key) whose random is
  ``HMAC-SHA256(key, record with the random zeroed)`` with our clock XORed into its last 4 bytes.
  The relay must answer with the three records tdlib reads (ServerHello, ChangeCipherSpec, one
  ApplicationData), and the ServerHello random must be ``HMAC-SHA256(key, our random ‖ the
  response with that random zeroed)``. Only a holder of the key can make it, so a look-alike, a
  mask host or a real web server fails here.
* **dc**. We send the obfuscated2 header (padded intermediate for ``ee`` and ``dd``,
  intermediate for ``classic``) and an unencrypted ``req_pq_multi`` (inside ``17 03 03`` records
  for ``ee``). A ``resPQ`` echoing our nonce comes back only if the relay decrypted our header
  with the secret and reached a DC that speaks MTProto.

:class:`ProbeClient` holds one conversation and is driven like h11: ``receive_data(bytes)``
(``b""`` for EOF), then ``next_event()``, which returns :data:`NEED_DATA` or a
:class:`StagePassed` carrying the bytes to send next, and raises :class:`ProbeError` (whose
``detail`` the result records) when the relay's answer is wrong. The caller owns the socket
and the clock: ``now`` comes in, nothing here sleeps or reads the time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from proxylist.errors import ProbeError
from proxylist.model import Relay, Stage

HELLO_SIZE = 517
RECORD_HEADER = 5
MAX_RECORD = 16384 + 256
"""The largest TLS record payload a peer may send (RFC 8446 §5.2, ciphertext)."""
MAX_FRAME = 4096
"""A ``resPQ`` is about 90 bytes; a first frame longer than this is not one."""
HANDSHAKE_PREFIX = b"\x16\x03\x03"
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
APPDATA_PREFIX = b"\x17\x03\x03"
PADDED = b"\xdd\xdd\xdd\xdd"
INTERMEDIATE = b"\xee\xee\xee\xee"
REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
_RANDOM = slice(11, 43)
_TRIES = 256
"""Redraws of a header before giving up (each draw fails with probability about 1/128)."""
# A header must not look like another protocol to a middlebox, nor like TLS to an ee relay.
_FORBIDDEN_STARTS = (b"HEAD", b"POST", b"GET ", b"OPTI", b"\xdd" * 4, b"\xee" * 4)
_SUITES = bytes.fromhex("130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a")

Entropy = Callable[[int], bytes]
"""Where random bytes come from (``os.urandom``; tests pass a seeded source)."""


class NeedData:
    """The type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""Returned when the bytes so far are a valid beginning but not yet a whole answer."""


@dataclass(frozen=True)
class StagePassed:
    """One stage of the probe succeeded."""

    stage: Stage
    send: bytes = b""
    """Bytes to write to the relay now (empty after the last stage)."""


@dataclass(frozen=True)
class ServerResponse:
    """A fake-TLS server response that carries the right HMAC."""

    size: int
    """Bytes the three records take; anything after them is application data."""
    appdata_size: int


@dataclass(frozen=True)
class ResPQ:
    """A DC's ``resPQ#05162463`` answer to ``req_pq_multi``."""

    nonce: bytes
    server_nonce: bytes
    pq: bytes
    fingerprints: tuple[int, ...]


# -- fake-TLS ClientHello ------------------------------------------------------------------------


def _grease(entropy: Entropy) -> list[bytes]:
    """Eight GREASE values as tdlib draws them (RFC 8701); neighbours 2i, 2i+1 differ."""
    values = bytearray((b & 0xF0) | 0x0A for b in entropy(8))
    for i in range(1, len(values), 2):
        if values[i] == values[i - 1]:
            values[i] ^= 0x10
    return [bytes([v, v]) for v in values]


def x25519_public(entropy: Entropy) -> bytes:
    """A fresh x25519 public key for the key_share, as a real client sends.

    Random bytes would be a point on the twist half the time, which a censor could count
    (tdlib draws a point on the curve for this reason). Ours is a real public key, made from 32
    bytes of ``entropy`` as the private key, so it is on the curve by construction.
    """
    private = X25519PrivateKey.from_private_bytes(entropy(32))
    return private.public_key().public_bytes_raw()


def _ext(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">H", len(body)) + body


def _extensions(domain: bytes, entropy: Entropy) -> tuple[bytes, bytes]:
    """(GREASE cipher suite, every extension but padding) in tdlib's (Chrome's) order."""
    g = _grease(entropy)
    sni = struct.pack(">HBH", len(domain) + 3, 0, len(domain)) + domain
    key_share = b"\x00\x29" + g[4] + b"\x00\x01\x00" + b"\x00\x1d\x00\x20" + x25519_public(entropy)
    return g[0], b"".join(
        (
            _ext(g[2], b""),
            _ext(b"\x00\x00", sni),
            _ext(b"\x00\x17", b""),  # extended master secret
            _ext(b"\xff\x01", b"\x00"),  # renegotiation info
            _ext(b"\x00\x0a", b"\x00\x08" + g[4] + bytes.fromhex("001d00170018")),
            _ext(b"\x00\x0b", b"\x01\x00"),  # ec point formats: uncompressed
            _ext(b"\x00\x23", b""),  # session ticket
            _ext(b"\x00\x10", bytes.fromhex("000c02683208687474702f312e31")),  # h2, http/1.1
            _ext(b"\x00\x05", bytes.fromhex("0100000000")),  # status request (OCSP)
            _ext(b"\x00\x0d", bytes.fromhex("0012040308040401050308050501080606010201")),
            _ext(b"\x00\x12", b""),  # signed certificate timestamps
            _ext(b"\x00\x33", key_share),
            _ext(b"\x00\x2d", b"\x01\x01"),  # psk key exchange modes
            _ext(b"\x00\x2b", b"\x0a" + g[6] + bytes.fromhex("0304030303020301")),
            _ext(b"\x00\x1b", b"\x02\x00\x02"),  # compress certificate: brotli
            _ext(g[3], b"\x00"),
        )
    )


def client_hello(key: bytes, domain: str, now: float, entropy: Entropy = os.urandom) -> bytes:
    """A tdlib-shaped ClientHello record for ``key`` and ``domain`` at Unix time ``now``.

    The record is 517 bytes (a padding extension fills it; a domain over about 150 characters
    makes it longer). Its random is the HMAC-SHA256 of the record with the random zeroed, with
    the last 4 bytes XORed with ``now`` as a little-endian uint32.
    """
    session_id = entropy(32)
    grease, extensions = _extensions(domain.encode("ascii"), entropy)
    suites = grease + _SUITES
    head = b"\x03\x03" + bytes(32) + b"\x20" + session_id + struct.pack(">H", len(suites)) + suites
    head += b"\x01\x00"  # compression: null
    used = RECORD_HEADER + 4 + len(head) + 2 + len(extensions) + 4
    extensions += _ext(b"\x00\x15", bytes(max(0, HELLO_SIZE - used)))
    body = head + struct.pack(">H", len(extensions)) + extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    record = bytearray(b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake)
    mac = hmac.new(key, bytes(record), hashlib.sha256).digest()
    stamp = (int(now) & 0xFFFFFFFF).to_bytes(4, "little")
    record[_RANDOM] = mac[:28] + bytes(a ^ b for a, b in zip(mac[28:], stamp, strict=True))
    return bytes(record)


# -- fake-TLS server response --------------------------------------------------------------------


def _expect(data: bytes, pos: int, prefix: bytes) -> bool:
    """True when ``prefix`` is all there at ``pos``; False when only part of it has come.

    Raises ``bad record`` as soon as a byte differs, so an HTTP answer fails at once.
    """
    got = data[pos : pos + len(prefix)]
    if got != prefix[: len(got)]:
        raise ProbeError("bad record", f"expected a record starting {prefix.hex()}: {got.hex()}")
    return len(got) == len(prefix)


def _record_end(data: bytes, pos: int, prefix: bytes) -> int | None:
    """Where the record at ``pos`` ends, or None while it is incomplete."""
    if not _expect(data, pos, prefix) or len(data) < pos + RECORD_HEADER:
        return None
    length = int.from_bytes(data[pos + 3 : pos + 5], "big")
    if length > MAX_RECORD:
        raise ProbeError("bad record", f"a TLS record of {length} bytes is over the limit")
    end = pos + RECORD_HEADER + length
    return end if len(data) >= end else None


def parse_server_response(
    data: bytes, key: bytes, client_random: bytes
) -> ServerResponse | NeedData:
    """Check a fake-TLS relay's answer to our ClientHello (whose random was ``client_random``).

    Reads exactly what tdlib reads: a ``16 03 03`` ServerHello record, ``14 03 03 00 01 01``,
    then one ``17 03 03`` record; then checks the HMAC in the ServerHello random. Bytes after
    the three records are left alone. Raises ``ProbeError`` (``bad record``, ``bad hmac``).
    """
    hello_end = _record_end(data, 0, HANDSHAKE_PREFIX)
    if len(data) > RECORD_HEADER and data[RECORD_HEADER] != 0x02:
        raise ProbeError("bad record", f"handshake type {data[5]:#04x} is not a ServerHello")
    if hello_end is None:
        return NEED_DATA
    if hello_end < _RANDOM.stop:
        raise ProbeError("bad record", f"a ServerHello record of {hello_end} bytes has no random")
    ccs_end = hello_end + len(CCS_RECORD)
    if not _expect(data, hello_end, CCS_RECORD):
        return NEED_DATA
    end = _record_end(data, ccs_end, APPDATA_PREFIX)
    if end is None:
        return NEED_DATA
    zeroed = data[: _RANDOM.start] + bytes(32) + data[_RANDOM.stop : end]
    want = hmac.new(key, client_random + zeroed, hashlib.sha256).digest()
    if not hmac.compare_digest(want, data[_RANDOM]):
        raise ProbeError("bad hmac", "the ServerHello was not made with this secret")
    return ServerResponse(end, end - ccs_end - RECORD_HEADER)


def wrap(data: bytes) -> bytes:
    """Frame stream bytes as ``17 03 03`` records of at most 16,384 payload bytes."""
    return b"".join(
        APPDATA_PREFIX + struct.pack(">H", len(chunk)) + chunk
        for chunk in (data[i : i + 16384] for i in range(0, len(data), 16384))
    )


# -- obfuscated2 and MTProto ---------------------------------------------------------------------


def _ctr(key: bytes, iv: bytes) -> Any:
    """An AES-256-CTR keystream (the IV a big-endian 128-bit counter)."""
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


def _acceptable(header: bytes | bytearray) -> bool:
    return (
        header[0] != 0xEF
        and header[:4] not in _FORBIDDEN_STARTS
        and header[:3] != b"\x16\x03\x01"
        and any(header[4:8])
    )


def client_header(
    key: bytes, tag: bytes, dc: int, entropy: Entropy = os.urandom
) -> tuple[bytes, Any, Any]:
    """The 64-byte obfuscated2 header toward a proxy holding ``key``, with its keystreams.

    Returns (header to send, client→proxy encryptor positioned after the header,
    proxy→client decryptor). Keys: SHA-256(h[8:40] ‖ key) with IV h[40:56] one way, and the
    same over reverse(h[8:56]) the other.
    """
    for _ in range(_TRIES):
        raw = bytearray(entropy(64))
        raw[56:60] = tag
        raw[60:62] = dc.to_bytes(2, "little", signed=True)
        if _acceptable(raw):
            break
    else:
        raise RuntimeError("the entropy source never gave a usable obfuscated2 header")
    back = bytes(raw[8:56])[::-1]
    encryptor = _ctr(hashlib.sha256(raw[8:40] + key).digest(), bytes(raw[40:56]))
    decryptor = _ctr(hashlib.sha256(back[:32] + key).digest(), back[32:48])
    sealed = encryptor.update(bytes(raw))
    return bytes(raw[:56]) + sealed[56:], encryptor, decryptor


def req_pq_multi(nonce: bytes, now: float) -> bytes:
    """An unencrypted ``req_pq_multi#be7e8ef1 nonce:int128`` message (auth_key_id 0)."""
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    msg_id = int(now * 2**32) & ~3  # client message ids are divisible by 4
    return struct.pack("<qQi", 0, msg_id, len(body)) + body


def frame(tag: bytes, payload: bytes, entropy: Entropy = os.urandom) -> bytes:
    """``payload`` framed for intermediate, or padded intermediate with 0-3 random bytes."""
    if tag == PADDED:
        payload += entropy(entropy(1)[0] % 4)
    return struct.pack("<I", len(payload)) + payload


def read_frame(stream: bytes | bytearray, tag: bytes) -> tuple[bytes, int] | NeedData:
    """The first (intermediate or padded) frame in ``stream`` and the bytes it took."""
    if len(stream) < 4:
        return NEED_DATA
    size = int.from_bytes(stream[:4], "little")
    if size > MAX_FRAME:
        raise ProbeError("bad resPQ", f"a first frame of {size} bytes is not a resPQ")
    if len(stream) < 4 + size:
        return NEED_DATA
    keep = size - size % 4 if tag == PADDED else size  # padding, per PROTOCOLS.md
    return bytes(stream[4 : 4 + keep]), 4 + size


class _Cursor:
    """Reads little-endian fields from a message; ``bad resPQ`` when it runs out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ProbeError("bad resPQ", f"the message ends inside its {what}")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def tl_bytes(self, what: str) -> bytes:
        """A TL ``bytes``/``string``: 1 or 4 length bytes, the data, zero padding to 4."""
        first = self.take(1, what)[0]
        if first == 255:
            raise ProbeError("bad resPQ", f"{what} has an invalid length byte 0xff")
        size, head = first, 1
        if first == 254:
            size, head = int.from_bytes(self.take(3, what), "little"), 4
        value = self.take(size, what)
        self.take(-(head + size) % 4, what)
        return value


def parse_res_pq(payload: bytes, nonce: bytes) -> ResPQ:
    """Check an unencrypted ``resPQ`` message that must echo ``nonce``; ``bad resPQ`` if not."""
    if len(payload) == 4:
        code = int.from_bytes(payload, "little", signed=True)
        raise ProbeError("bad resPQ", f"the DC answered with transport error {code}")
    cur = _Cursor(payload)
    auth_key_id, msg_id, length = struct.unpack("<qQi", cur.take(20, "header"))
    if auth_key_id != 0:
        raise ProbeError("bad resPQ", "the answer is not an unencrypted message")
    if msg_id % 2 != 1 or length != len(payload) - 20:
        raise ProbeError("bad resPQ", f"bad message id {msg_id:#x} or length {length}")
    if (constructor := cur.u32("constructor")) != RES_PQ:
        raise ProbeError("bad resPQ", f"constructor {constructor:#010x} is not resPQ")
    if not hmac.compare_digest(cur.take(16, "nonce"), nonce):
        raise ProbeError("bad resPQ", "the resPQ nonce is not ours")
    server_nonce = cur.take(16, "server nonce")
    pq = cur.tl_bytes("pq")
    if not pq or cur.u32("fingerprint vector") != VECTOR:
        raise ProbeError("bad resPQ", "empty pq or no fingerprint vector")
    count = cur.u32("fingerprint count")
    if not 1 <= count <= (len(payload) - cur.pos) // 8:
        raise ProbeError("bad resPQ", f"{count} fingerprints do not fit the message")
    fingerprints = struct.unpack(f"<{count}Q", cur.take(8 * count, "fingerprints"))
    if cur.pos != len(payload):
        raise ProbeError("bad resPQ", f"{len(payload) - cur.pos} stray bytes after the resPQ")
    return ResPQ(nonce, server_nonce, pq, fingerprints)


# -- the conversation ----------------------------------------------------------------------------


class ProbeClient:
    """One probe conversation with ``relay`` over one connection (see the module docstring).

    ``initial`` is what to send once connected; ``stages`` the stages left after ``connect``;
    ``stage`` the one being waited on (None when done).
    """

    def __init__(
        self, relay: Relay, *, now: float, dc: int = 2, entropy: Entropy = os.urandom
    ) -> None:
        self._key = relay.key
        self._tag = INTERMEDIATE if relay.mode == "classic" else PADDED
        self._nonce = entropy(16)
        header, encryptor, self._decrypt = client_header(relay.key, self._tag, dc, entropy)
        request = encryptor.update(frame(self._tag, req_pq_multi(self._nonce, now), entropy))
        self._tls = relay.mode == "ee"
        self._buffer = bytearray()
        self._stream = bytearray()
        self._eof = False
        if self._tls:
            assert relay.domain is not None  # Relay guarantees a domain for ee
            self.initial = client_hello(relay.key, relay.domain, now, entropy)
            self._after_hello = CCS_RECORD + wrap(header + request)
            self.stages: tuple[Stage, ...] = ("tls-hmac", "dc")
        else:
            self.initial = header + request
            self.stages = ("dc",)
        self.stage: Stage | None = self.stages[0]

    def receive_data(self, data: bytes) -> None:
        """Bytes from the relay; ``b""`` means it closed the connection."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> StagePassed | NeedData:
        """Progress from the bytes so far; raises ``ProbeError`` for a wrong answer."""
        if self.stage == "tls-hmac":
            return self._tls_event()
        if self.stage == "dc":
            return self._dc_event()
        raise RuntimeError("the probe is finished; start a new ProbeClient")

    def _tls_event(self) -> StagePassed | NeedData:
        response = parse_server_response(bytes(self._buffer), self._key, self.initial[_RANDOM])
        if isinstance(response, NeedData):
            return self._wait()
        del self._buffer[: response.size]
        self.stage = "dc"
        return StagePassed("tls-hmac", self._after_hello)

    def _dc_event(self) -> StagePassed | NeedData:
        self._stream += self._decrypt.update(self._unwrap() if self._tls else self._take_all())
        found = read_frame(self._stream, self._tag)
        if isinstance(found, NeedData):
            return self._wait()
        parse_res_pq(found[0], self._nonce)
        self.stage = None
        return StagePassed("dc")

    def _take_all(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _unwrap(self) -> bytes:
        """The payloads of the complete ``17 03 03`` records buffered so far."""
        data, pos, payloads = bytes(self._buffer), 0, []
        while (end := _record_end(data, pos, APPDATA_PREFIX)) is not None:
            payloads.append(data[pos + RECORD_HEADER : end])
            pos = end
        del self._buffer[:pos]
        return b"".join(payloads)

    def _wait(self) -> NeedData:
        if self._eof:
            got = len(self._buffer) + len(self._stream)
            raise ProbeError("closed", f"the relay closed the connection after {got} bytes")
        return NEED_DATA
