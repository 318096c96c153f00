"""The relay on real loopback sockets: relaying, masking, anti-replay, limits, back-pressure."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from relay import Relay, RelaySettings, Secret, faketls, obfs2
from tests.relay.fakedc import (
    PADDED,
    FakeDC,
    FrameDecoder,
    encode_frame,
    make_req_pq_multi,
    parse_res_pq,
)
from tests.relay.tlsclient import TlsClient, check_server_hello, client_hello, read_server_hello

KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")
OTHER = bytes.fromhex("fedcba9876543210fedcba9876543210")
DOMAIN = "example.com"
MASK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nmask host page"


class MaskHost:
    """A tiny web server playing the mask host: records what it got, answers a fixed page."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = 0

    async def __aenter__(self) -> MaskHost:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        self.received.append(data)
        writer.write(MASK_REPLY)
        await writer.drain()
        writer.close()


@asynccontextmanager
async def running(
    dc_mode: str = "echo", **overrides: object
) -> AsyncIterator[tuple[Relay, FakeDC, MaskHost]]:
    async with FakeDC(dc_mode) as dc, MaskHost() as mask:  # type: ignore[arg-type]
        settings = RelaySettings(
            listen=(("127.0.0.1", 0),),
            secrets=(Secret("main", KEY),),
            modes=frozenset({"ee", "dd"}),
            tls_domain=DOMAIN,
            mask_host="127.0.0.1",
            mask_port=mask.port,
            dc={2: ("127.0.0.1", dc.port)},
        )
        relay = Relay(replace(settings, **overrides))  # type: ignore[arg-type]
        await relay.start()
        try:
            yield relay, dc, mask
        finally:
            await relay.stop()


async def read_frames(recv: Callable[[], Awaitable[bytes]], count: int) -> list[bytes]:
    """Read ``count`` padded-intermediate frames from a decrypted byte source."""
    frames = FrameDecoder(PADDED)
    got: list[bytes] = []
    while len(got) < count:
        got += [f.payload for f in frames.feed(await recv())]
    return got


class DDClient:
    """A raw padded-intermediate (dd) client on a plain socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes):
        self.reader, self.writer = reader, writer
        header, self.enc, self.dec = obfs2.client_header(key, PADDED, 2)
        writer.write(header)

    @classmethod
    async def connect(cls, port: int, key: bytes = KEY) -> DDClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port), key)

    def send(self, payload: bytes) -> None:
        self.writer.write(self.enc.update(encode_frame(PADDED, payload)))

    async def recv(self) -> bytes:
        chunk = await self.reader.read(65536)
        if not chunk:
            raise ConnectionError("the relay closed the connection")
        return self.dec.update(chunk)  # type: ignore[no-any-return]


async def masked_reply(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return reply


@pytest.mark.asyncio
async def test_dd_client_reaches_the_dc_and_gets_res_pq() -> None:
    async with running() as (relay, dc, _):
        port = relay.addresses[0][1]
        nonce = os.urandom(16)
        payloads = [make_req_pq_multi(nonce), os.urandom(1000), os.urandom(200_000)]
        client = await DDClient.connect(port)
        for payload in payloads:
            client.send(payload)
        got = await read_frames(client.recv, 3)
        client.writer.close()
        assert parse_res_pq(got[0]) == nonce
        assert got[1:] == payloads[1:]
        assert dc.headers[0].tag == PADDED
        assert relay.metrics.get("relay_connections_total", secret="main") == 1


@pytest.mark.asyncio
async def test_fake_tls_client_checks_server_hmac_and_relays() -> None:
    async with running() as (relay, _, _):
        client = await TlsClient.connect("127.0.0.1", relay.addresses[0][1], KEY, DOMAIN)
        nonce, payload = os.urandom(16), os.urandom(300_000)
        client.send(encode_frame(PADDED, make_req_pq_multi(nonce)))
        client.send(encode_frame(PADDED, payload))
        got = await read_frames(client.recv, 2)
        assert parse_res_pq(got[0]) == nonce
        assert got[1] == payload
        await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "case",
    ["plain-http", "bad-hmac", "replay", "time-skew", "unknown-secret-ee", "unknown-secret-dd"],
)
async def test_failed_clients_get_exactly_the_mask_hosts_bytes(case: str) -> None:
    async with running() as (relay, dc, mask):
        port = relay.addresses[0][1]
        if case == "plain-http":
            data = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
        elif case == "bad-hmac":
            hello = bytearray(client_hello(KEY, DOMAIN))
            hello[100] ^= 1
            data = bytes(hello)
        elif case == "replay":
            data = client_hello(KEY, DOMAIN)
            client_reader, client_writer = await asyncio.open_connection("127.0.0.1", port)
            client_writer.write(data)
            await client_reader.readexactly(5)  # the first use is served
            client_writer.close()
        elif case == "time-skew":
            data = client_hello(KEY, DOMAIN, int(time.time()) - 3600)
        elif case == "unknown-secret-ee":
            data = client_hello(OTHER, DOMAIN)
        else:
            data = obfs2.client_header(OTHER, PADDED, 2)[0] + b"more bytes"
        assert await masked_reply(port, data) == MASK_REPLY
        assert mask.received[-1] == data  # every byte the client sent reached the mask host
        assert relay.metrics.get("relay_masked_total") == 1


@pytest.mark.asyncio
async def test_half_handshake_is_closed_after_the_handshake_timeout() -> None:
    async with running(handshake_timeout=1.0) as (relay, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.addresses[0][1])
        writer.write(client_hello(KEY, DOMAIN)[:100])
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        assert time.monotonic() - start >= 0.9
        writer.close()


@pytest.mark.asyncio
async def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async with running(idle_timeout=1.0) as (relay, dc, _):
        client = await DDClient.connect(relay.addresses[0][1])
        client.send(b"ping")
        assert await read_frames(client.recv, 1) == [b"ping"]
        start = time.monotonic()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(read_frames(client.recv, 1), timeout=5)
        assert time.monotonic() - start >= 0.5
        client.writer.close()
        await dc.wait_for(lambda d: d.active == 0)  # the DC side was closed too


@pytest.mark.asyncio
async def test_per_secret_limit_refuses_the_excess() -> None:
    async with running(max_connections_per_secret=2) as (relay, dc, _):
        port = relay.addresses[0][1]
        conns = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            header, enc, _ = obfs2.client_header(KEY, PADDED, 2)
            writer.write(header)
            conns.append((reader, writer))
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(conns[2][0].read(), timeout=5) == b""  # refused
        await dc.wait_for(lambda d: d.connections == 2)
        assert relay.metrics.get("relay_refused_total", reason="secret-limit") == 1
        for _, writer in conns:
            writer.close()


@pytest.mark.asyncio
async def test_memory_stays_bounded_when_the_dc_does_not_read() -> None:
    async with running("stall") as (relay, dc, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.addresses[0][1])
        header, enc, _ = obfs2.client_header(KEY, PADDED, 2)
        writer.write(header)
        chunk = os.urandom(1 << 20)
        sent = 0
        for _ in range(64):  # try to push 64 MiB into a DC that never reads
            writer.write(enc.update(chunk))
            try:
                await asyncio.wait_for(writer.drain(), timeout=0.5)
            except TimeoutError:
                break
            sent += len(chunk)
        await asyncio.sleep(0.5)
        held = sum(
            (c.peer.transport.get_write_buffer_size() if c.peer and c.peer.transport else 0)
            + len(c.buffer)
            for c in relay.connections
        )
        assert sent < 48 << 20, "the client was never slowed down"
        assert held < 2 << 20, f"the relay holds {held} bytes for a stalled DC"
        writer.transport.abort()


@pytest.mark.asyncio
async def test_download_to_a_slow_client_is_exact_and_bounded() -> None:
    """The DC sends faster than the client reads: the relay's partial writes and the copies
    it keeps of what the socket refused must still give the client every byte, in order,
    in well-formed records of at most 16 KiB, while the relay holds little."""
    total = 24 << 20
    async with running("source") as (relay, dc, _):
        dc.source_bytes = total
        client = await TlsClient.connect("127.0.0.1", relay.addresses[0][1], KEY, DOMAIN)
        client.writer.transport.pause_reading()  # let the relay's socket to us fill up
        await dc.wait_for(lambda d: d.bytes_out > 0)
        await asyncio.sleep(0.5)
        (conn,) = relay.connections
        assert conn.transport is not None
        held = conn.transport.get_write_buffer_size() + len(conn.buffer)
        assert dc.bytes_out < total, "the DC was never slowed down"
        assert held <= 256 * 1024, f"the relay holds {held} bytes for a slow client"
        client.writer.transport.resume_reading()
        got, largest, raw = 0, 0, bytearray()
        while got < total:
            chunk = await asyncio.wait_for(client.reader.read(1 << 16), timeout=10)
            assert chunk, f"the relay closed after {got} of {total} bytes"
            raw += chunk
            while len(raw) >= 5 and len(raw) >= 5 + int.from_bytes(raw[3:5], "big"):
                size = int.from_bytes(raw[3:5], "big")
                assert raw[:3] == b"\x17\x03\x03", f"record header {bytes(raw[:5]).hex()}"
                largest = max(largest, size)
                plain = client.decryptor.update(bytes(raw[5 : 5 + size]))  # type: ignore[attr-defined]
                assert plain == bytes(size), f"wrong bytes at offset {got}"
                got += size
                del raw[: 5 + size]
            await asyncio.sleep(0.001)  # stay slower than the DC
        assert got == total and largest == 16384
        await client.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_reads_shrink_for_a_client_on_a_slow_link(loop: str) -> None:
    """A phone on a throttled link has a small TCP window, so the relay's socket to it takes
    a little at a time. The relay's reads from the DC must shrink to match, so what waits in
    user space per slow client is about one record, not the rest of a 256 KiB read. With
    uvloop too, which ``kopir relay serve`` runs on when the "fast" extra is installed."""
    factory = pytest.importorskip("uvloop").new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        held = runner.run(_download_through_a_small_window())
    late = held[len(held) // 4 :]
    assert max(late) > 0, "the client never fell behind: the test shows nothing"
    # Reads fit the socket's room but are at least a record, and the room is an estimate:
    # allow two records and their headers.
    assert max(late) <= 2 * (16384 + 5), f"the relay held up to {max(late)} bytes late on"


async def _download_through_a_small_window() -> list[int]:
    """Bytes the relay held for the client before each of the client's 16 KiB reads."""
    total = 8 << 20
    async with running("source") as (relay, dc, _):
        dc.source_bytes = total
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a small window, from SYN
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.addresses[0][1]))
        reader, writer = await asyncio.open_connection(sock=sock)
        hello = client_hello(KEY, DOMAIN)
        writer.write(hello)
        check_server_hello(KEY, hello, await read_server_hello(reader))
        (conn,) = relay.connections
        assert conn.transport is not None
        conn.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16384
        )
        header, _, _ = obfs2.client_header(KEY, obfs2.PADDED, 2)
        writer.write(faketls.CCS_RECORD + faketls.wrap(header))  # now the DC starts sending
        got, held, raw = 0, [], bytearray()
        while got < total:  # 16 KiB, then a pause: slower than the DC sends
            held.append(conn.transport.get_write_buffer_size())
            chunk = await asyncio.wait_for(reader.read(16384), timeout=10)
            assert chunk, f"the relay closed after {got} of {total} bytes"
            raw += chunk
            while len(raw) >= 5 and len(raw) >= 5 + int.from_bytes(raw[3:5], "big"):
                assert raw[:3] == b"\x17\x03\x03", f"record header {bytes(raw[:5]).hex()}"
                size = int.from_bytes(raw[3:5], "big")
                got += size
                del raw[: 5 + size]
            await asyncio.sleep(0.0002)
        writer.close()
    return held


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.asyncio
async def test_2000_concurrent_connections_complete_and_release_their_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
    try:
        async with running() as (relay, dc, _):
            port = relay.addresses[0][1]
            baseline = _open_files()

            async def one(i: int) -> bytes:
                client = await DDClient.connect(port)
                payload = i.to_bytes(4, "big") * 64
                client.send(payload)
                try:
                    (echo,) = await asyncio.wait_for(read_frames(client.recv, 1), timeout=60)
                finally:
                    client.writer.close()
                    await client.writer.wait_closed()
                return echo == payload

            results = await asyncio.gather(*(one(i) for i in range(2000)))
            assert all(results) and len(results) == 2000
            await dc.wait_for(lambda d: d.active == 0, timeout=30)
            async with asyncio.timeout(30):
                while relay.connections:
                    await asyncio.sleep(0.05)
            assert dc.connections == 2000
            assert _open_files() <= baseline
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.asyncio
@pytest.mark.parametrize("dc_mode", ["sink", "source"])
async def test_a_client_that_resets_mid_transfer_is_cleaned_up(dc_mode: str) -> None:
    """A reset while bytes flow up (to a sink DC) or down (from a source DC): the relay may
    be in one of its own extra reads then (relay.flow.MORE_READS). Both sides close, the
    descriptors go, and the relay goes on serving."""
    async with running(dc_mode) as (relay, dc, _):
        dc.source_bytes = 1 << 30
        port = relay.addresses[0][1]
        baseline = _open_files()
        for _ in range(3):
            goal = dc.bytes_in + dc.bytes_out + (1 << 20)
            client = await DDClient.connect(port)
            if dc_mode == "sink":
                for _ in range(32):  # 8 MiB up; the source DC pours bytes down by itself
                    client.send(os.urandom(256 * 1024))
            await dc.wait_for(lambda d, goal=goal: d.bytes_in + d.bytes_out > goal, timeout=10)
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.writer.transport.abort()  # a reset, with bytes still in flight
            async with asyncio.timeout(10):
                while relay.connections or dc.active:
                    await asyncio.sleep(0.02)
        assert _open_files() <= baseline
        assert relay.metrics.get("relay_connections_total", secret="main") == 3
        if dc_mode == "sink":  # and it still relays
            client = await DDClient.connect(port)
            client.send(b"after the resets")
            await dc.wait_for(lambda d: d.connections == 4 and d.active == 1, timeout=10)
            client.writer.close()


@pytest.mark.asyncio
async def test_dd_header_starting_like_tls_is_still_relayed() -> None:
    """1 in 256 obfuscated2 headers starts with 0x16; only 16 03 01 means fake-TLS."""
    async with running() as (relay, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.addresses[0][1])
        while True:
            header, enc, dec = obfs2.client_header(KEY, PADDED, 2)
            if header[0] == 0x16 and header[1:3] != b"\x03\x01":
                break
        writer.write(header[:1])
        await asyncio.sleep(0.05)  # the relay sees the 0x16 alone first
        writer.write(header[1:] + enc.update(encode_frame(PADDED, b"hello!!!")))

        async def recv() -> bytes:
            return dec.update(await reader.read(65536))  # type: ignore[no-any-return]

        assert await asyncio.wait_for(read_frames(recv, 1), timeout=5) == [b"hello!!!"]
        writer.close()


@pytest.mark.asyncio
async def test_metrics_on_loopback_per_secret_without_client_addresses() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        metrics_port = sock.getsockname()[1]
    async with running(metrics_listen=("127.0.0.1", metrics_port)) as (relay, _, _):
        client = await DDClient.connect(relay.addresses[0][1])
        client.send(b"ping")
        assert await read_frames(client.recv, 1) == [b"ping"]
        client.writer.close()
        await masked_reply(relay.addresses[0][1], b"GET / HTTP/1.0\r\n\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        page = (await asyncio.wait_for(reader.read(), timeout=5)).decode()
        writer.close()
    assert page.startswith("HTTP/1.1 200 OK")
    assert 'relay_connections_total{secret="main"} 1' in page
    assert 'relay_bytes_total{direction="up",secret="main"}' in page
    assert 'relay_handshake_failures_total{reason="not-mtproto",secret=""} 1' in page
    assert "relay_masked_total 1" in page
    assert "127.0.0.1" not in page.split("\r\n\r\n", 1)[1]


@pytest.mark.asyncio
async def test_several_listen_addresses_ipv4_and_ipv6() -> None:
    listen = (("127.0.0.1", 0), ("127.0.0.1", 0), ("::1", 0))
    async with running(listen=listen) as (relay, dc, _):
        assert len(relay.addresses) == 3
        for host, port in relay.addresses:
            reader, writer = await asyncio.open_connection(host, port)
            client = DDClient(reader, writer, KEY)
            client.send(host.encode().ljust(12, b"."))
            assert await read_frames(client.recv, 1) == [host.encode().ljust(12, b".")]
            writer.close()
        assert dc.connections == 3


def test_allocator_tuning_applies_on_glibc() -> None:
    from relay.tuning import tune_allocator

    assert tune_allocator(), "mallopt was not found or refused the thresholds"
