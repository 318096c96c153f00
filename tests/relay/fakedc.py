"""A fake Telegram DC for the relay's tests: the server side of obfuscated2, with no secret.

Theory of operation (PROTOCOLS.md, "MTProto transport obfuscation", "Padded intermediate",
"A full-path probe"):

- A relay in direct mode opens a TCP connection to the DC and sends its own 64-byte header ``h``.
  The DC decrypts all 64 bytes with key ``h[8:40]`` and IV ``h[40:56]`` (AES-256-CTR, the IV a
  big-endian 128-bit counter); bytes 56..60 of the result are the protocol tag and 60..62 the
  signed DC index. That decryptor goes on at byte 64. The DC's answers are encrypted with
  ``r = reverse(h[8:56])``: key ``r[0:32]``, IV ``r[32:48]``, counter from 0.
- In ``echo`` mode the DC parses transport frames for the tag. An unencrypted
  ``req_pq_multi`` gets a ``resPQ`` echoing the nonce, as a real DC does; any other frame comes
  back unchanged. Answers use the same transport. Padded-intermediate answers carry 0-3 random
  padding bytes, so clients must strip it as the spec says. A quick-ack bit on a request is
  noted (`Frame.quick_ack`) but not answered, and answers never carry it.

This module is test scaffolding written from the spec alone; it imports nothing from ``relay``.
It also holds the client side of the header (`client_header`), which the tests use to talk to
the fake DC, or to a relay, over raw sockets, and `LoopbackServer`, the lifecycle of every
test server here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ABRIDGED = b"\xef\xef\xef\xef"
INTERMEDIATE = b"\xee\xee\xee\xee"
PADDED = b"\xdd\xdd\xdd\xdd"
TAGS = (ABRIDGED, INTERMEDIATE, PADDED)

REQ_PQ_MULTI = 0xBE7E8EF1
RES_PQ = 0x05162463
VECTOR = 0x1CB5C415
# The values from Telegram's own worked example of the auth key exchange.
EXAMPLE_PQ = bytes.fromhex("17ED48941A08F981")
EXAMPLE_FINGERPRINT = 0xC3B42B026CE86B21

MAX_FRAME = 16 * 1024 * 1024
"""A frame longer than this closes the connection (a real DC caps frames far lower)."""

CHUNK = 64 * 1024

Mode = Literal["echo", "sink", "source", "stall"]

# Generated headers must not look like another protocol (PROTOCOLS.md, "Toward the DC").
_FORBIDDEN_STARTS = (b"HEAD", b"POST", b"GET ", b"OPTI", PADDED, INTERMEDIATE, b"\x16\x03\x01\x02")


class Ctr:
    """AES-256-CTR with the IV as a big-endian 128-bit counter; one object per direction."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()

    def update(self, data: bytes) -> bytes:
        return self._ctx.update(data)


@dataclass(frozen=True)
class Header:
    """What a fake DC read from one peer's 64-byte header."""

    raw: bytes
    """The 64 bytes as they arrived (0..56 in clear, 56..64 encrypted)."""
    tag: bytes
    dc: int
    """The signed DC index from bytes 60..62."""


@dataclass(frozen=True)
class Frame:
    payload: bytes
    quick_ack: bool


def client_header(tag: bytes, dc: int, key: bytes | None = None) -> tuple[bytes, Ctr, Ctr]:
    """Make a client's 64-byte header; return it with the (encrypt, decrypt) ciphers.

    With ``key`` (a proxy secret's 16 bytes) the keys are SHA-256(part ‖ key), as toward a
    proxy; without it they are the raw parts, as toward a DC. The encryptor has already
    consumed the 64 header bytes, so the next byte written continues its counter.
    """
    while True:
        h = bytearray(os.urandom(64))
        if h[0] != 0xEF and bytes(h[:4]) not in _FORBIDDEN_STARTS and any(h[4:8]):
            break
    h[56:60] = tag
    h[60:62] = dc.to_bytes(2, "little", signed=True)
    r = bytes(h[8:56])[::-1]
    send_key, recv_key = bytes(h[8:40]), r[:32]
    if key is not None:
        send_key = hashlib.sha256(send_key + key).digest()
        recv_key = hashlib.sha256(recv_key + key).digest()
    encrypt, decrypt = Ctr(send_key, bytes(h[40:56])), Ctr(recv_key, r[32:48])
    h[56:64] = encrypt.update(bytes(h))[56:64]
    return bytes(h), encrypt, decrypt


def server_ciphers(raw: bytes) -> tuple[Header, Ctr, Ctr]:
    """Read a no-secret header as a DC does; return it with the (decrypt, encrypt) ciphers."""
    decrypt = Ctr(raw[8:40], raw[40:56])
    plain = decrypt.update(raw)
    r = raw[8:56][::-1]
    header = Header(
        raw=raw, tag=plain[56:60], dc=int.from_bytes(plain[60:62], "little", signed=True)
    )
    return header, decrypt, Ctr(r[:32], r[32:48])


class FrameDecoder:
    """Sans-IO reader of abridged / intermediate / padded-intermediate frames."""

    def __init__(self, tag: bytes) -> None:
        if tag not in TAGS:
            raise ValueError(f"unknown protocol tag {tag.hex()}")
        self._tag = tag
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete. Raises ValueError on an oversized frame."""
        self._buf += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self._buf
        if self._tag == ABRIDGED:
            if not buf:
                return None
            quick, size, start = bool(buf[0] & 0x80), (buf[0] & 0x7F) * 4, 1
            if buf[0] & 0x7F == 0x7F:
                if len(buf) < 4:
                    return None
                size, start = int.from_bytes(buf[1:4], "little") * 4, 4
        else:
            if len(buf) < 4:
                return None
            word = int.from_bytes(buf[:4], "little")
            quick, size, start = bool(word & 0x80000000), word & 0x7FFFFFFF, 4
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is over the fake DC's limit of {MAX_FRAME}")
        if len(buf) < start + size:
            return None
        payload = bytes(buf[start : start + size])
        del buf[: start + size]
        if self._tag == PADDED:
            payload = payload[: size - size % 4]
        return Frame(payload, quick)


def encode_frame(tag: bytes, payload: bytes) -> bytes:
    """Frame ``payload`` for ``tag``; padded frames get 0-3 random padding bytes."""
    if tag == ABRIDGED:
        if len(payload) % 4:
            raise ValueError(f"abridged payloads are whole words, not {len(payload)} bytes")
        words = len(payload) // 4
        prefix = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
        return prefix + payload
    if tag == PADDED:
        payload += os.urandom(secrets.randbelow(4))
    elif tag != INTERMEDIATE:
        raise ValueError(f"unknown protocol tag {tag.hex()}")
    return struct.pack("<I", len(payload)) + payload


def _message_id(server: bool) -> int:
    msg_id = int(time.time() * 2**32) & ~3
    return msg_id | 1 if server else msg_id


def make_req_pq_multi(nonce: bytes) -> bytes:
    """An unencrypted MTProto message ``req_pq_multi#be7e8ef1 nonce:int128`` (a frame payload)."""
    if len(nonce) != 16:
        raise ValueError(f"nonce must be 16 bytes, not {len(nonce)}")
    body = struct.pack("<I", REQ_PQ_MULTI) + nonce
    return struct.pack("<qqi", 0, _message_id(server=False), len(body)) + body


def parse_req_pq_multi(payload: bytes) -> bytes | None:
    """The nonce if ``payload`` is an unencrypted ``req_pq_multi``, else None."""
    if len(payload) != 40 or any(payload[:8]):
        return None
    length, constructor = struct.unpack_from("<iI", payload, 16)
    return payload[24:40] if length == 20 and constructor == REQ_PQ_MULTI else None


def make_res_pq(nonce: bytes) -> bytes:
    """An unencrypted ``resPQ`` echoing ``nonce`` (random server nonce, example pq/fingerprint)."""
    pq = bytes([len(EXAMPLE_PQ)]) + EXAMPLE_PQ
    pq += b"\0" * (-len(pq) % 4)
    body = b"".join(
        (
            struct.pack("<I", RES_PQ),
            nonce,
            os.urandom(16),
            pq,
            struct.pack("<IiQ", VECTOR, 1, EXAMPLE_FINGERPRINT),
        )
    )
    return struct.pack("<qqi", 0, _message_id(server=True), len(body)) + body


def parse_res_pq(payload: bytes) -> bytes:
    """The nonce of an unencrypted ``resPQ`` message; ValueError if ``payload`` is not one."""
    if len(payload) < 20 + 4 + 32 or any(payload[:8]):
        raise ValueError(f"not an unencrypted MTProto message: {payload[:24].hex()}")
    (length,) = struct.unpack_from("<i", payload, 16)
    (constructor,) = struct.unpack_from("<I", payload, 20)
    if constructor != RES_PQ or length != len(payload) - 20:
        raise ValueError(f"not a resPQ: constructor {constructor:#010x}, length {length}")
    return payload[24:40]


def answer(payload: bytes) -> bytes:
    """What the echo DC sends back for one frame payload."""
    nonce = parse_req_pq_multi(payload)
    return payload if nonce is None else make_res_pq(nonce)


class LoopbackServer:
    """An asyncio TCP server on 127.0.0.1 whose connections all end with the ``async with``.

    Subclasses implement `handle`. On exit the server stops listening, sets `closing`, aborts
    every open connection and waits for the handlers to see EOF (ones still running after 5 s
    are cancelled). Handlers are not cancelled first because Python 3.11's ``start_server``
    logs an error for every cancelled handler.
    """

    def __init__(self) -> None:
        self.port = 0
        self.closing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def server(self) -> asyncio.Server:
        """The listening server (started on entry)."""
        assert self._server is not None
        return self._server

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.closing.set()
        await asyncio.sleep(0)  # a connection accepted just now registers (and sees `closing`)
        for writer in self._handlers.values():
            writer.transport.abort()
        if self._handlers:
            _, late = await asyncio.wait(list(self._handlers), timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection; the writer is closed afterwards."""
        raise NotImplementedError

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        try:
            if not self.closing.is_set():
                await self.handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            del self._handlers[task]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class FakeDC(LoopbackServer):
    """A Telegram DC in direct mode, on 127.0.0.1 (see `LoopbackServer` for the lifecycle).

    Modes: ``echo`` answers each frame (see module doc); ``sink`` reads and discards;
    ``source`` sends ``source_bytes`` bytes of keystream (encrypted zeros) and closes;
    ``stall`` reads the header, then stops reading until the ``async with`` ends (for
    back-pressure tests). Other modes close a connection on EOF from its peer.
    """

    def __init__(self, mode: Mode = "echo", *, source_bytes: int = 0) -> None:
        if mode not in ("echo", "sink", "source", "stall"):
            raise ValueError(f"unknown fake DC mode {mode!r}")
        super().__init__()
        self.mode = mode
        self.source_bytes = source_bytes
        self.connections = 0
        """Connections accepted so far."""
        self.active = 0
        """Connections open now."""
        self.rejected = 0
        """Connections closed for a bad protocol tag or an oversized frame."""
        self.bytes_in = 0
        """Bytes received after the 64-byte headers, over all connections."""
        self.bytes_out = 0
        self.headers: list[Header] = []

    async def wait_for(self, condition: Callable[[FakeDC], bool], timeout: float = 5.0) -> None:
        """Poll until ``condition(self)`` holds; TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not condition(self):
                await asyncio.sleep(0.01)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        try:
            header, decrypt, encrypt = server_ciphers(await reader.readexactly(64))
            self.headers.append(header)
            if header.tag not in TAGS:
                self.rejected += 1
                return
            await self._run(header.tag, _Link(self, reader, writer, decrypt, encrypt))
        except ValueError:
            self.rejected += 1
        finally:
            self.active -= 1

    async def _run(self, tag: bytes, link: _Link) -> None:
        if self.mode == "echo":
            decoder = FrameDecoder(tag)
            while data := await link.read():
                for frame in decoder.feed(data):
                    await link.write(encode_frame(tag, answer(frame.payload)))
        elif self.mode == "sink":
            while await link.read():
                pass
        elif self.mode == "source":
            left = self.source_bytes
            while left > 0 and not self.closing.is_set():
                await link.write(bytes(min(CHUNK, left)))
                left -= CHUNK
        else:
            cast(asyncio.Transport, link.writer.transport).pause_reading()
            await self.closing.wait()


@dataclass
class _Link:
    """One accepted connection after its header: decrypts what it reads, encrypts what it writes."""

    dc: FakeDC
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decrypt: Ctr
    encrypt: Ctr

    async def read(self) -> bytes:
        data = await self.reader.read(CHUNK)
        self.dc.bytes_in += len(data)
        return self.decrypt.update(data)

    async def write(self, data: bytes) -> None:
        self.writer.write(self.encrypt.update(data))
        self.dc.bytes_out += len(data)
        await self.writer.drain()
