"""Proves the relay's test peers: the fake DC on its own, and the real clients through a proxy.

The relay is written at the same time, so this module carries a mini proxy of its own, just
enough of one (one secret, direct mode, re-encryption both ways; fake TLS without masking,
time window or replay checks) to put each real client in front of the fake DC. It follows
PROTOCOLS.md ("MTProto transport obfuscation", "Fake-TLS") and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import pytest
from telethon.crypto import AESModeCTR

from tests.relay.clients import (
    KINDS,
    Kind,
    TelethonCtr,
    connect,
    fast_telethon_aes,
    probe,
    roundtrip,
    telethon_secret,
)
from tests.relay.fakedc import (
    ABRIDGED,
    CHUNK,
    INTERMEDIATE,
    PADDED,
    TAGS,
    Ctr,
    FakeDC,
    Frame,
    FrameDecoder,
    LoopbackServer,
    client_header,
    encode_frame,
    make_req_pq_multi,
    parse_res_pq,
)

KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")
DD_KEY = bytes.fromhex("dd23456789abcdef0123456789abcdef")  # trips Telethon's prefix stripping
DOMAIN = b"example.com"
EE = "ee" + KEY.hex() + DOMAIN.hex()
HOST = "127.0.0.1"


class _Reader(Protocol):
    async def read(self, n: int = ...) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...


def check_client_hello(record: bytes, key: bytes) -> int:
    """The timestamp in a fake-TLS ClientHello record; AssertionError if the HMAC fails."""
    assert record[:3] == b"\x16\x03\x01" and len(record) >= 512, record[:5].hex()
    mac = hmac.new(key, record[:11] + bytes(32) + record[43:], hashlib.sha256).digest()
    plain = bytes(a ^ b for a, b in zip(mac, record[11:43], strict=True))
    assert plain[:28] == bytes(28), "ClientHello HMAC does not match the secret"
    return int.from_bytes(plain[28:], "little")


def server_hello(key: bytes, client_digest: bytes, session_id: bytes) -> bytes:
    """ServerHello, ChangeCipherSpec and one ApplicationData record, signed for the client."""
    ext = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x24\x00\x1d\x00\x20" + os.urandom(32)
    body = b"\x03\x03" + bytes(32) + b"\x20" + session_id + b"\x13\x01\x00"
    body += len(ext).to_bytes(2, "big") + ext
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    filler = os.urandom(2500)
    response = b"".join(
        (
            b"\x16\x03\x03" + len(handshake).to_bytes(2, "big") + handshake,
            b"\x14\x03\x03\x00\x01\x01",
            b"\x17\x03\x03" + len(filler).to_bytes(2, "big") + filler,
        )
    )
    mac = hmac.new(key, client_digest + response, hashlib.sha256).digest()
    return response[:11] + mac + response[43:]


def tls_records(data: bytes) -> bytes:
    chunks = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    return b"".join(b"\x17\x03\x03" + len(c).to_bytes(2, "big") + c for c in chunks)


class TlsReader:
    """The payload of ``17`` records as a stream; ``14`` records are skipped."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = b""
        self.types: list[int] = []
        """The type of each record read, in order."""
        self.largest = 0
        """The largest record payload read."""

    async def read(self, n: int = CHUNK) -> bytes:
        while not self._buf:
            try:
                head = await self._reader.readexactly(5)
            except asyncio.IncompleteReadError:
                return b""
            body = await self._reader.readexactly(int.from_bytes(head[3:5], "big"))
            self.types.append(head[0])
            self.largest = max(self.largest, len(body))
            if head[0] not in (0x14, 0x17):
                raise ConnectionError(f"TLS record type {head[0]:#x} after the handshake")
            self._buf = body if head[0] == 0x17 else b""
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    async def readexactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            if not (chunk := await self.read(n - len(data))):
                raise asyncio.IncompleteReadError(data, n)
            data += chunk
        return data


class MiniProxy(LoopbackServer):
    """A throwaway MTProxy in direct mode with one secret key (``tls``: fake TLS only)."""

    def __init__(self, key: bytes, dc_port: int, *, tls: bool = False) -> None:
        super().__init__()
        self.key, self.dc_port, self.tls = key, dc_port, tls
        self.hello_times: list[int] = []
        self.tls_readers: list[TlsReader] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: _Reader = reader
        if self.tls:
            try:
                client = await self._tls_handshake(reader, writer)
            except AssertionError:
                return  # a bad ClientHello: a relay would mask here
        head = await client.readexactly(64)
        rx = Ctr(hashlib.sha256(head[8:40] + self.key).digest(), head[40:56])
        plain = rx.update(head)
        r = head[8:56][::-1]
        tx = Ctr(hashlib.sha256(r[:32] + self.key).digest(), r[32:48])
        if plain[56:60] not in TAGS:
            return
        dc = int.from_bytes(plain[60:62], "little", signed=True)
        dc_header, dc_tx, dc_rx = client_header(plain[56:60], dc)
        dc_reader, dc_writer = await asyncio.open_connection(HOST, self.dc_port)
        try:
            dc_writer.write(dc_header)
            wrap = tls_records if self.tls else bytes
            up = _pipe(client, lambda d: dc_tx.update(rx.update(d)), dc_writer)
            down = _pipe(dc_reader, lambda d: wrap(tx.update(dc_rx.update(d))), writer)
            await _first_of(up, down, self.closing.wait())
        finally:
            dc_writer.close()
            with contextlib.suppress(ConnectionError):
                await dc_writer.wait_closed()

    async def _tls_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> TlsReader:
        head = await reader.readexactly(5)
        record = head + await reader.readexactly(int.from_bytes(head[3:5], "big"))
        self.hello_times.append(check_client_hello(record, self.key))
        assert record[43] == 32, "session id must be 32 bytes"
        writer.write(server_hello(self.key, record[11:43], record[44:76]))
        self.tls_readers.append(TlsReader(reader))
        return self.tls_readers[-1]


async def _pipe(src: _Reader, convert: Callable[[bytes], bytes], dst: asyncio.StreamWriter) -> None:
    while data := await src.read(CHUNK):
        dst.write(convert(data))
        await dst.drain()


async def _first_of(*coros: Coroutine[Any, Any, object]) -> None:
    """Run the coroutines until one ends (EOF or error); cancel the others."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# The fake DC on its own, over raw sockets.


def test_frame_decoder_reads_frames_byte_by_byte() -> None:
    frames = {
        ABRIDGED: b"\x01abcd" + b"\x81efgh" + b"\x7f\x7f\x00\x00" + bytes(508),
        INTERMEDIATE: b"\x03\x00\x00\x00xyz" + b"\x04\x00\x00\x80quik",
        PADDED: b"\x07\x00\x00\x00abcdPAD" + b"\x04\x00\x00\x00wxyz",
    }
    expected = {
        ABRIDGED: [(b"abcd", False), (b"efgh", True), (bytes(508), False)],
        INTERMEDIATE: [(b"xyz", False), (b"quik", True)],
        PADDED: [(b"abcd", False), (b"wxyz", False)],
    }
    for tag, stream in frames.items():
        decoder = FrameDecoder(tag)
        got = [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]
        assert [(f.payload, f.quick_ack) for f in got] == expected[tag]
    for tag in TAGS:
        payload = os.urandom(4 * 300)
        assert FrameDecoder(tag).feed(encode_frame(tag, payload))[0].payload == payload


@pytest.mark.asyncio
@pytest.mark.parametrize("tag", TAGS, ids=["abridged", "intermediate", "padded"])
async def test_fake_dc_echoes_frames_and_answers_req_pq_multi(tag: bytes) -> None:
    nonce = os.urandom(16)
    payloads = [b"abcd" * 3, os.urandom(4 * 127), os.urandom(70000), make_req_pq_multi(nonce)]
    sent = b"".join(encode_frame(tag, p) for p in payloads)
    async with FakeDC() as dc:
        reader, writer = await asyncio.open_connection(HOST, dc.port)
        head, encrypt, decrypt = client_header(tag, -3)
        writer.write(head + encrypt.update(sent))
        decoder, frames = FrameDecoder(tag), list[Frame]()
        while len(frames) < len(payloads) and (data := await reader.read(CHUNK)):
            frames += decoder.feed(decrypt.update(data))
        writer.close()
        await writer.wait_closed()
        await dc.wait_for(lambda d: d.active == 0)
    assert [f.payload for f in frames[:3]] == payloads[:3]
    assert parse_res_pq(frames[3].payload) == nonce
    assert (dc.connections, dc.rejected, dc.bytes_in) == (1, 0, len(sent))
    assert (dc.headers[0].tag, dc.headers[0].dc, dc.headers[0].raw) == (tag, -3, head)


@pytest.mark.asyncio
async def test_fake_dc_keeps_concurrent_connections_apart() -> None:
    async def one(dc: FakeDC, i: int) -> bool:
        reader, writer = await asyncio.open_connection(HOST, dc.port)
        head, encrypt, decrypt = client_header(PADDED, 2)
        payload = i.to_bytes(4, "big") * 64
        writer.write(head + encrypt.update(encode_frame(PADDED, payload)))
        decoder, frames = FrameDecoder(PADDED), list[Frame]()
        while not frames and (data := await reader.read(CHUNK)):
            frames += decoder.feed(decrypt.update(data))
        writer.close()
        await writer.wait_closed()
        return [f.payload for f in frames] == [payload]

    async with FakeDC() as dc:
        results = await asyncio.gather(*(one(dc, i) for i in range(300)))
        await dc.wait_for(lambda d: d.active == 0)
    assert all(results) and (dc.connections, dc.rejected) == (300, 0)


@pytest.mark.asyncio
async def test_fake_dc_closes_on_a_bad_tag() -> None:
    async with FakeDC() as dc:
        reader, writer = await asyncio.open_connection(HOST, dc.port)
        head, encrypt, _ = client_header(b"\x00\x01\x02\x03", 2)
        writer.write(head + encrypt.update(encode_frame(INTERMEDIATE, b"ping")))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        await dc.wait_for(lambda d: d.active == 0)
    assert (dc.connections, dc.rejected, dc.bytes_out) == (1, 1, 0)


@pytest.mark.asyncio
async def test_fake_dc_sink_counts_and_source_sends_keystream() -> None:
    async with FakeDC("sink") as sink, FakeDC("source", source_bytes=300_001) as source:
        _, writer = await asyncio.open_connection(HOST, sink.port)
        head, encrypt, _ = client_header(PADDED, 2)
        writer.write(head + encrypt.update(bytes(100_000)))
        writer.close()
        await writer.wait_closed()
        reader, writer = await asyncio.open_connection(HOST, source.port)
        head, _, decrypt = client_header(ABRIDGED, 2)
        writer.write(head)
        received = decrypt.update(await asyncio.wait_for(reader.read(), 5))
        writer.close()
        await writer.wait_closed()
        await sink.wait_for(lambda d: d.active == 0 and d.bytes_in == 100_000)
    assert received == bytes(300_001) and source.bytes_out == 300_001


@pytest.mark.asyncio
async def test_fake_dc_stall_pushes_back() -> None:
    async with FakeDC("stall") as dc:
        _, writer = await asyncio.open_connection(HOST, dc.port)
        head, encrypt, _ = client_header(INTERMEDIATE, 2)
        writer.write(head + encrypt.update(bytes(64 << 20)))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)
        writer.transport.abort()
    assert (dc.connections, dc.active, dc.bytes_in) == (1, 0, 0)


# The real clients, through the mini proxy.


def test_our_ctr_is_telethons_ctr() -> None:
    key, iv = os.urandom(32), bytes(8) + b"\xff" * 7 + b"\xfe"  # carries across 64 bits
    data = os.urandom(1001)
    ours, theirs = TelethonCtr(key, iv), AESModeCTR(key, iv)
    assert ours.encrypt(data[:13]) + ours.encrypt(data[13:]) == theirs.encrypt(data)


@pytest.mark.asyncio
async def test_telethon_clients_reach_the_fake_dc_byte_exact() -> None:
    payloads = [os.urandom(4 * n) for n in (1, 126, 127, 128, 1000, 4096)]
    runs: list[tuple[Kind, str, int]] = [
        ("classic", KEY.hex(), 1),
        ("intermediate", "dd" + KEY.hex(), -2),
        ("dd", "dd" + KEY.hex(), 4),
    ]
    async with (
        FakeDC() as dc,
        MiniProxy(KEY, dc.port) as proxy,
        MiniProxy(DD_KEY, dc.port) as dd_proxy,
    ):
        trips = [roundtrip(k, HOST, proxy.port, s, payloads, dc_id=i) for k, s, i in runs]
        trips.append(roundtrip("classic", HOST, dd_proxy.port, DD_KEY.hex(), payloads[:1], dc_id=5))
        probes = [probe(k, HOST, proxy.port, s, dc_id=i) for k, s, i in runs]
        results = await asyncio.gather(*trips, *probes)
        await dc.wait_for(lambda d: d.active == 0)
    assert results[:3] == [payloads] * 3 and results[3] == payloads[:1]
    seen = sorted((h.tag, h.dc) for h in dc.headers)
    assert seen == sorted([(ABRIDGED, 1), (INTERMEDIATE, -2), (PADDED, 4)] * 2 + [(ABRIDGED, 5)])


@pytest.mark.asyncio
async def test_faketls_client_reaches_the_fake_dc() -> None:
    payloads = [os.urandom(4 * n) for n in (1, 127, 5000)]
    async with FakeDC() as dc, MiniProxy(KEY, dc.port, tls=True) as proxy:
        got = await roundtrip("faketls", HOST, proxy.port, EE, payloads, dc_id=3)
        await probe("faketls", HOST, proxy.port, EE, dc_id=-3)
    assert got == payloads
    assert [(h.tag, h.dc) for h in dc.headers] == [(PADDED, 3), (PADDED, -3)]
    assert all(abs(t - time.time()) < 60 for t in proxy.hello_times)


@pytest.mark.asyncio
async def test_one_mebibyte_in_frames_is_byte_exact() -> None:
    blob, sizes, frames = os.urandom(1 << 20), [4, 508, 512, 16388, 65536, 100000], list[bytes]()
    while (done := sum(map(len, frames))) < len(blob):
        frames.append(blob[done : done + sizes[len(frames) % len(sizes)]])
    with fast_telethon_aes():
        async with (
            FakeDC() as dc,
            MiniProxy(KEY, dc.port) as proxy,
            MiniProxy(KEY, dc.port, tls=True) as tls_proxy,
        ):
            results = await asyncio.gather(
                roundtrip("dd", HOST, proxy.port, "dd" + KEY.hex(), frames),
                roundtrip("classic", HOST, proxy.port, KEY.hex(), frames),
                roundtrip("faketls", HOST, tls_proxy.port, EE, frames),
            )
    assert [b"".join(r) for r in results] == [blob] * 3
    # telethonfaketls sends no ChangeCipherSpec, and records of up to 16,408 bytes (> 2**14).
    (tls,) = tls_proxy.tls_readers
    assert set(tls.types) == {0x17} and tls.largest == 16384 + 24


@pytest.mark.asyncio
async def test_faketls_client_hello_is_signed_with_the_secret() -> None:
    hello: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)
        hello.set_result(head + await reader.readexactly(int.from_bytes(head[3:5], "big")))
        writer.close()

    server = await asyncio.start_server(capture, HOST, 0)
    try:
        with pytest.raises(asyncio.IncompleteReadError):
            await connect("faketls", HOST, server.sockets[0].getsockname()[1], EE)
        record = await asyncio.wait_for(hello, 5)
    finally:
        server.close()
        await server.wait_closed()
    assert len(record) == 517 and record[43] == 32
    assert abs(check_client_hello(record, KEY) - time.time()) < 60
    assert b"\x00" + len(DOMAIN).to_bytes(2, "big") + DOMAIN in record  # SNI host_name
    with pytest.raises(AssertionError):
        check_client_hello(record, DD_KEY)


@pytest.mark.asyncio
async def test_faketls_client_checks_the_server_hmac() -> None:
    done = asyncio.Event()

    async def answer_wrongly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)
        record = head + await reader.readexactly(int.from_bytes(head[3:5], "big"))
        writer.write(server_hello(DD_KEY, record[11:43], record[44:76]))
        await reader.read()
        writer.close()
        done.set()

    server = await asyncio.start_server(answer_wrongly, HOST, 0)
    try:
        with pytest.raises(Exception, match="server hello verification failed"):
            await connect("faketls", HOST, server.sockets[0].getsockname()[1], EE)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


def test_secret_forms_per_client() -> None:
    assert {k: telethon_secret(k, KEY.hex()) for k in KINDS if k != "faketls"} == dict.fromkeys(
        ("classic", "intermediate", "dd"), "dd" + KEY.hex()
    )
    assert telethon_secret("faketls", EE) == EE[2:]
    with pytest.raises(ValueError, match="key starting with byte dd"):
        telethon_secret("faketls", "ee" + DD_KEY.hex() + DOMAIN.hex())
    with pytest.raises(ValueError, match="needs an ee secret"):
        telethon_secret("faketls", "dd" + KEY.hex())
