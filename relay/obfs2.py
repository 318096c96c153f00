"""MTProto transport obfuscation ("obfuscated2"), sans-IO.

Theory of operation
-------------------
A client opens with 64 bytes ``h``: noise (0..8), prekey (8..40), IV (40..56), protocol tag
(56..60), DC index (60..62, int16 LE, negative for media DCs), noise (62..64). Bytes 56..64 are
only meaningful after decryption (https://core.telegram.org/mtproto/mtproto-transports#transport-obfuscation,
and PROTOCOLS.md "MTProto transport obfuscation"):

* client→proxy: AES-256-CTR, key = SHA-256(h[8:40] ‖ secret), IV = h[40:56]; the counter
  continues after the header;
* proxy→client: with r = reverse(h[8:56]), key = SHA-256(r[0:32] ‖ secret), IV = r[32:48].

Toward the DC the proxy sends its own header ``g`` with no secret (key = g[8:40], IV =
g[40:56]); the DC answers with key = reverse(g[8:56])[0:32], IV = ...[32:48]. "Fast mode" picks
g[8:56] so that the DC's answer keystream *is* the client's proxy→client keystream: the relay
then forwards DC→client bytes untouched, and only the upload direction is re-encrypted.

This module holds no sockets and no clock; ``relay.server`` moves the bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from relay.errors import HandshakeError
from relay.keystream import Keystream

HEADER_SIZE = 64
ABRIDGED = b"\xef\xef\xef\xef"
INTERMEDIATE = b"\xee\xee\xee\xee"
PADDED = b"\xdd\xdd\xdd\xdd"
TAGS = (ABRIDGED, INTERMEDIATE, PADDED)
# A generated header must not look like another protocol to a middlebox (PROTOCOLS.md).
_FORBIDDEN_STARTS = (
    b"HEAD",
    b"POST",
    b"GET ",
    b"OPTI",
    b"\xdd" * 4,
    b"\xee" * 4,
    b"\x16\x03\x01\x02",
)
# Only the starts clients are required to avoid: masking anything else could hit a real client.
_NOT_A_HEADER = frozenset(_FORBIDDEN_STARTS)


def ctr(key: bytes, iv: bytes) -> Keystream:
    """An AES-256-CTR keystream (encrypting and decrypting are the same operation)."""
    return Keystream(key, iv)


@dataclass(frozen=True)
class Secret:
    """One labelled relay secret: the 16-byte key the links carry after the ee/dd prefix."""

    name: str
    key: bytes


@dataclass
class ClientStream:
    """The outcome of a client's obfuscated2 header."""

    secret: Secret
    tag: bytes
    """``ABRIDGED``, ``INTERMEDIATE`` or ``PADDED``: the framing the client speaks."""
    dc: int
    """Signed DC index from the header; negative for media DCs, 0 meaning DC 2."""
    decryptor: Keystream
    """client→proxy keystream, positioned after the header."""
    encrypt_key: bytes
    encrypt_iv: bytes
    """proxy→client key and IV (used directly, or handed to the DC in fast mode)."""


def _client_keys(header: bytes, secret: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    prekey, iv = header[8:40], header[40:56]
    reverse = header[8:56][::-1]
    dec_key = hashlib.sha256(prekey + secret).digest()
    enc_key = hashlib.sha256(reverse[:32] + secret).digest()
    return dec_key, iv, enc_key, reverse[32:48]


def parse_client_header(
    header: bytes, secrets: Sequence[Secret], allowed_tags: Sequence[bytes] = TAGS
) -> ClientStream:
    """Find the secret under which ``header`` decrypts to a known tag.

    Raises ``HandshakeError("unknown-secret")`` when none does, and
    ``HandshakeError("bad-tag")`` when the tag is known but not allowed here.
    """
    if len(header) != HEADER_SIZE:
        raise HandshakeError("short-header", f"need {HEADER_SIZE} bytes, got {len(header)}")
    refused = None
    for secret in secrets:
        dec_key, dec_iv, enc_key, enc_iv = _client_keys(header, secret.key)
        decryptor = ctr(dec_key, dec_iv)
        plain = decryptor.update(header)
        tag = plain[56:60]
        if tag not in TAGS:
            continue
        if tag not in allowed_tags:
            refused = tag
            continue
        dc = int.from_bytes(plain[60:62], "little", signed=True)
        return ClientStream(secret, tag, dc, decryptor, enc_key, enc_iv)
    if refused is not None:
        raise HandshakeError("bad-tag", f"protocol {refused.hex()} is not enabled")
    raise HandshakeError("unknown-secret", "no configured secret decrypts this header")


@dataclass
class DCStream:
    """The proxy's own obfuscated2 header toward a DC and the upload keystream."""

    header: bytes
    """The 64 bytes to send first (0..56 in clear, 56..64 encrypted)."""
    encryptor: Keystream
    """proxy→DC keystream, positioned after the header."""
    decryptor: Keystream | None
    """DC→proxy keystream, or None in fast mode (DC bytes are already right for the client)."""


def never_a_header(start: bytes) -> bool:
    """True when these first bytes cannot begin a client header (an HTTP request, say).

    Clients avoid these starts on purpose, so the relay can mask such peers at once instead
    of waiting for 64 bytes that will never come.
    """
    return start[:1] == b"\xef" or (len(start) >= 4 and start[:4] in _NOT_A_HEADER)


def _acceptable(header: bytes | bytearray) -> bool:
    return (
        header[0] != 0xEF
        and header[:4] not in _FORBIDDEN_STARTS
        and header[4:8] != b"\x00\x00\x00\x00"
    )


def dc_header(
    tag: bytes, dc: int, fast_key: bytes | None = None, fast_iv: bytes | None = None
) -> DCStream:
    """Build the header toward a DC for ``tag`` and ``dc``.

    With ``fast_key``/``fast_iv`` (the client's proxy→client key and IV), the DC's reply is
    encrypted with exactly that keystream, so it can be forwarded as is.
    """
    while True:
        raw = bytearray(os.urandom(HEADER_SIZE))
        if fast_key is not None and fast_iv is not None:
            raw[8:56] = (fast_key + fast_iv)[::-1]
        raw[56:60] = tag
        raw[60:62] = dc.to_bytes(2, "little", signed=True)
        if _acceptable(raw):
            break
    encryptor = ctr(bytes(raw[8:40]), bytes(raw[40:56]))
    encrypted = encryptor.update(bytes(raw))
    header = bytes(raw[:56]) + encrypted[56:]
    decryptor = None
    if fast_key is None:
        reverse = bytes(raw[8:56])[::-1]
        decryptor = ctr(reverse[:32], reverse[32:48])
    return DCStream(header, encryptor, decryptor)


def client_header(secret: bytes, tag: bytes, dc: int) -> tuple[bytes, Keystream, Keystream]:
    """A client's header for ``secret`` (a prober, or a test), with its two keystreams.

    Returns (header to send, client→proxy encryptor positioned after the header,
    proxy→client decryptor).
    """
    while True:
        raw = bytearray(os.urandom(HEADER_SIZE))
        raw[56:60] = tag
        raw[60:62] = dc.to_bytes(2, "little", signed=True)
        if _acceptable(raw):
            break
    enc_key, enc_iv, dec_key, dec_iv = _client_keys(bytes(raw), secret)
    encryptor = ctr(enc_key, enc_iv)
    encrypted = encryptor.update(bytes(raw))
    return bytes(raw[:56]) + encrypted[56:], encryptor, ctr(dec_key, dec_iv)
