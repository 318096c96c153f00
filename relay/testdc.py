"""A local stand-in for a Telegram DC, for trying kopir on one machine with no internet.

Only ``[relay] local_test_dc = true`` starts it (never on a real relay: it is not Telegram).
It lets the whole pipeline run on loopback: the relay dials it instead of Telegram, and the
prober's full-path check (``req_pq_multi`` → ``resPQ``) passes through the relay to it.

Theory of operation (PROTOCOLS.md, "MTProto transport obfuscation" and "A full-path probe"):
the relay opens a connection in direct mode and sends its 64-byte header ``h``. We decrypt it
with key ``h[8:40]`` and IV ``h[40:56]`` (AES-256-CTR); bytes 56..60 of the result are the
transport tag, and that decryptor goes on at byte 64. Answers use key and IV from
``reverse(h[8:56])``. Frames (abridged, intermediate, padded intermediate) are read by
:class:`Frames`, a sans-IO reader; an unencrypted ``req_pq_multi`` gets a ``resPQ`` with its
nonce, and any other frame is echoed back unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from typing import cast

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

log = logging.getLogger("kopir.relay.testdc")

ABRIDGED, INTERMEDIATE, PADDED = b"\xef" * 4, b"\xee" * 4, b"\xdd" * 4
REQ_PQ_MULTI, RES_PQ, VECTOR = 0xBE7E8EF1, 0x05162463, 0x1CB5C415
EXAMPLE_PQ = bytes.fromhex("17ED48941A08F981")  # from Telegram's worked auth-key example
EXAMPLE_FINGERPRINT = 0xC3B42B026CE86B21
MAX_FRAME = 1 << 20
HEADER = 64


def _ctr(key: bytes, iv: bytes) -> CipherContext:
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


class Frames:
    """Sans-IO transport frame reader for one tag; ``feed`` returns the complete payloads."""

    def __init__(self, tag: bytes) -> None:
        if tag not in (ABRIDGED, INTERMEDIATE, PADDED):
            raise ValueError(f"unknown transport tag {tag.hex()}")
        self.tag = tag
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while (payload := self._next()) is not None:
            out.append(payload)
        return out

    def _next(self) -> bytes | None:
        buf = self._buf
        if self.tag == ABRIDGED:
            if not buf:
                return None
            size, start = (buf[0] & 0x7F) * 4, 1
            if buf[0] & 0x7F == 0x7F:
                if len(buf) < 4:
                    return None
                size, start = int.from_bytes(buf[1:4], "little") * 4, 4
        else:
            if len(buf) < 4:
                return None
            size, start = int.from_bytes(buf[:4], "little") & 0x7FFFFFFF, 4
        if size > MAX_FRAME:
            raise ValueError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
        if len(buf) < start + size:
            return None
        payload = bytes(buf[start : start + size])
        del buf[: start + size]
        return payload[: size - size % 4] if self.tag == PADDED else payload

    def encode(self, payload: bytes) -> bytes:
        if self.tag == ABRIDGED:
            words = len(payload) // 4
            head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
            return head + payload
        return struct.pack("<I", len(payload)) + payload


def res_pq_for(payload: bytes) -> bytes | None:
    """The ``resPQ`` answering an unencrypted ``req_pq_multi``, or None for anything else."""
    if len(payload) != 40 or any(payload[:8]):
        return None
    length, constructor = struct.unpack_from("<iI", payload, 16)
    if length != 20 or constructor != REQ_PQ_MULTI:
        return None
    pq = bytes([len(EXAMPLE_PQ)]) + EXAMPLE_PQ
    pq += b"\0" * (-len(pq) % 4)
    body = struct.pack("<I", RES_PQ) + payload[24:40] + os.urandom(16) + pq
    body += struct.pack("<IiQ", VECTOR, 1, EXAMPLE_FINGERPRINT)
    msg_id = (int(time.time() * 2**32) & ~3) | 1
    return struct.pack("<qqi", 0, msg_id, len(body)) + body


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.decrypt: CipherContext | None = None
        self.encrypt: CipherContext | None = None
        self.frames: Frames | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self._receive(data)
        except ValueError as exc:
            log.debug("test DC: closing a connection: %s", exc)
            self.transport.close()

    def _receive(self, data: bytes) -> None:
        if self.frames is None:
            self.head += data
            if len(self.head) < HEADER:
                return
            raw, data = bytes(self.head[:HEADER]), bytes(self.head[HEADER:])
            self.decrypt = _ctr(raw[8:40], raw[40:56])
            tag = self.decrypt.update(raw)[56:60]
            r = raw[8:56][::-1]
            self.encrypt = _ctr(r[:32], r[32:48])
            self.frames = Frames(tag)
        assert self.decrypt is not None and self.encrypt is not None and self.transport
        for payload in self.frames.feed(self.decrypt.update(data)):
            answer = res_pq_for(payload) or payload
            self.transport.write(self.encrypt.update(self.frames.encode(answer)))


class LocalTestDC:
    """The stand-in DC on 127.0.0.1 (a free port unless one is given)."""

    def __init__(self, port: int = 0) -> None:
        self.wanted = port
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> LocalTestDC:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(_Connection, "127.0.0.1", self.wanted)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
