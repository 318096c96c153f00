"""Our own fake-TLS client for the relay tests: a tdlib-shaped ClientHello, and a strict check of
the relay's reply (layout tdlib accepts, and the HMAC that proves the relay knows the secret)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass

from relay import faketls, obfs2


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


def client_hello(key: bytes, domain: str, timestamp: int | None = None) -> bytes:
    """A 517-byte ClientHello record like tdlib's, signed with ``key`` at ``timestamp``."""
    ts = int(time.time()) if timestamp is None else timestamp
    name = domain.encode("ascii")
    extensions = b"".join(
        [
            _ext(0x0A0A, b""),  # GREASE
            _ext(0x0000, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name),
            _ext(0x0017, b""),
            _ext(0x000A, b"\x00\x06\x0a\x0a\x00\x1d\x00\x17"),
            _ext(0x000B, b"\x01\x00"),
            _ext(0x0033, b"\x00\x29\x0a\x0a\x00\x01\x00\x00\x1d\x00\x20" + os.urandom(32)),
            _ext(0x002B, b"\x06\x0a\x0a\x03\x04\x03\x03"),
        ]
    )
    suites = b"\x0a\x0a\x13\x01\x13\x02\x13\x03\xc0\x2b\xc0\x2f"
    fixed = 4 + 2 + 32 + 1 + 32 + 2 + len(suites) + 2 + 2 + len(extensions) + 4
    padding = 517 - 5 - fixed
    extensions += _ext(0x0015, bytes(padding))
    body = (
        b"\x03\x03" + bytes(32) + b"\x20" + os.urandom(32)
        + struct.pack(">H", len(suites)) + suites + b"\x01\x00"
        + struct.pack(">H", len(extensions)) + extensions
    )  # fmt: skip
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    record = bytearray(b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake)
    mac = hmac.new(key, bytes(record), hashlib.sha256).digest()
    record[11:43] = mac[:28] + bytes(
        a ^ b for a, b in zip(mac[28:], ts.to_bytes(4, "little"), strict=True)
    )
    assert len(record) == 517
    return bytes(record)


class BadServerHello(AssertionError):
    """The relay's reply is not what tdlib accepts."""


def check_server_hello(key: bytes, hello: bytes, response: bytes) -> None:
    """Exactly three records (ServerHello, CCS, one ApplicationData) and a valid HMAC."""
    records, pos = [], 0
    while pos < len(response):
        if len(response) - pos < 5:
            raise BadServerHello("trailing bytes after the records")
        length = int.from_bytes(response[pos + 3 : pos + 5], "big")
        records.append(response[pos : pos + 5 + length])
        pos += 5 + length
    if [r[:3] for r in records] != [b"\x16\x03\x03", b"\x14\x03\x03", b"\x17\x03\x03"]:
        raise BadServerHello(f"record layout {[r[:3].hex() for r in records]}")
    if records[1] != faketls.CCS_RECORD:
        raise BadServerHello("ChangeCipherSpec record is not 14 03 03 00 01 01")
    server = records[0]
    if server[5] != 0x02 or server[9:11] != b"\x03\x03" or server[43] != 0x20:
        raise BadServerHello("not a TLS 1.2-framed ServerHello with a 32-byte session id")
    if server[44:76] != hello[44:76]:
        raise BadServerHello("session id not echoed")
    if (
        b"\x00\x2b\x00\x02\x03\x04" not in server
        or b"\x00\x33\x00\x24\x00\x1d\x00\x20" not in server
    ):
        raise BadServerHello("missing supported_versions or x25519 key_share")
    zeroed = bytearray(response)
    zeroed[11:43] = bytes(32)
    want = hmac.new(key, hello[11:43] + bytes(zeroed), hashlib.sha256).digest()
    if not hmac.compare_digest(want, response[11:43]):
        raise BadServerHello("server HMAC does not match: not the relay holding this secret")


async def read_server_hello(reader: asyncio.StreamReader) -> bytes:
    """Read exactly the three handshake records."""
    data = b""
    for _ in range(3):
        head = await reader.readexactly(5)
        data += head + await reader.readexactly(int.from_bytes(head[3:5], "big"))
    return data


@dataclass
class TlsClient:
    """A connected fake-TLS client speaking padded intermediate inside ``17 03 03`` records."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    encryptor: object
    decryptor: object
    records: faketls.RecordReader

    @classmethod
    async def connect(
        cls, host: str, port: int, key: bytes, domain: str, dc: int = 2,
        sock: socket.socket | None = None,
    ) -> TlsClient:  # fmt: skip
        """Connect (or, given ``sock``, already connected there), and hand-shake."""
        if sock is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
        hello = client_hello(key, domain)
        writer.write(hello)
        check_server_hello(key, hello, await read_server_hello(reader))
        header, encryptor, decryptor = obfs2.client_header(key, obfs2.PADDED, dc)
        writer.write(faketls.CCS_RECORD + faketls.wrap(header))
        return cls(reader, writer, encryptor, decryptor, faketls.RecordReader())

    def send(self, data: bytes) -> None:
        self.writer.write(faketls.wrap(self.encryptor.update(data)))  # type: ignore[attr-defined]

    async def recv(self) -> bytes:
        """The next decrypted bytes (maybe none, if only part of a record came)."""
        chunk = await self.reader.read(65536)
        if not chunk:
            raise ConnectionError("the relay closed the connection")
        return self.decryptor.update(self.records.feed(chunk))  # type: ignore[attr-defined, no-any-return]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
