"""The prober against real peers on loopback: `relay` with the fake DC, a mask web server, a
real TLS server (OpenSSL through ``ssl``), dead ports; plus the sans-IO core wired in memory to
the relay's own sans-IO server code (as h11's ConnectionPair does)."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxylist.errors import ProbeError, ProxylistError
from proxylist.model import Relay
from proxylist.probe import (
    NEED_DATA,
    ProbeClient,
    ServerResponse,
    StagePassed,
    client_hello,
    parse_res_pq,
    parse_server_response,
    x25519_public,
)
from proxylist.prober import probe_relay, probe_relays
from relay import Relay as RelayServer
from relay import RelaySettings, Secret, faketls, obfs2
from tests.relay.fakedc import FakeDC, FrameDecoder, LoopbackServer, answer, encode_frame

KEY = bytes.fromhex("0123456789abcdef0123456789abcdef")
OTHER = bytes.fromhex("fedcba9876543210fedcba9876543210")
DOMAIN = "example.com"
NOW = 1_800_000_000.0
TIMEOUT = 5.0


def relay_entry(port: int, mode: str = "ee", key: bytes = KEY, **kw: Any) -> Relay:
    return Relay("r", "127.0.0.1", port, key, mode, DOMAIN if mode == "ee" else None, **kw)  # type: ignore[arg-type]


class PeakSet(set[Any]):
    """The relay's set of live client connections, remembering its largest size."""

    peak = 0

    def add(self, item: Any) -> None:
        super().add(item)
        self.peak = max(self.peak, len(self))


@asynccontextmanager
async def relay_server(
    *, secret: bytes = KEY, dc_port: int, mask_port: int = 9, listen: int = 1, **kw: Any
) -> AsyncIterator[RelayServer]:
    settings = RelaySettings(
        listen=(("127.0.0.1", 0),) * listen,
        secrets=(Secret("main", secret),),
        modes=kw.pop("modes", frozenset({"ee", "dd"})),
        tls_domain=DOMAIN,
        mask_host="127.0.0.1",
        mask_port=mask_port,
        dc={2: ("127.0.0.1", dc_port)},
        **kw,
    )
    server = RelayServer(settings)
    server.connections = PeakSet()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def port_of(server: RelayServer, index: int = 0) -> int:
    return server.addresses[index][1]


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused, and nobody can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class HttpMask(LoopbackServer):
    """A plain web server, the mask host of a relay that does not know our secret."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()


class Silent(LoopbackServer):
    """Accepts, reads, never answers."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS 1.3 server context with a self-signed certificate for DOMAIN."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """A real TLS web server on loopback (OpenSSL does the handshake); yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def stage_names(result: Any) -> list[tuple[str, bool, str]]:
    return [(s.stage, s.ok, s.detail) for s in result.ports[0].stages]


# -- against a real relay ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["ee", "dd"])
async def test_good_relay_is_ok_at_every_stage(mode: str) -> None:
    async with FakeDC() as dc, relay_server(dc_port=dc.port) as server:
        port = port_of(server)
        result = await probe_relay(relay_entry(port, mode), timeout=TIMEOUT)
    expected = ["connect", "tls-hmac", "dc"] if mode == "ee" else ["connect", "dc"]
    assert stage_names(result) == [(stage, True, "") for stage in expected]
    assert result.ok and result.working_ports == (port,)
    assert result.rtt_ms is not None and result.rtt_ms >= 0
    assert dc.headers[0].tag == obfs2.PADDED


@pytest.mark.asyncio
async def test_good_classic_relay_speaks_intermediate() -> None:
    async with FakeDC() as dc, relay_server(dc_port=dc.port, modes=frozenset({"classic"})) as s:
        result = await probe_relay(relay_entry(port_of(s), "classic"), timeout=TIMEOUT)
    assert stage_names(result) == [("connect", True, ""), ("dc", True, "")]
    assert dc.headers[0].tag == obfs2.INTERMEDIATE


@pytest.mark.asyncio
async def test_wrong_secret_fails_at_tls_hmac_even_when_a_real_tls_server_answers(
    tls_context: ssl.SSLContext,
) -> None:
    # The relay masks us to a genuine TLS 1.3 server: the layout is right, the HMAC cannot be.
    async with FakeDC() as dc, tls_server(tls_context) as mask_port:
        async with relay_server(dc_port=dc.port, mask_port=mask_port) as server:
            entry = relay_entry(port_of(server), key=OTHER)
            result = await probe_relay(entry, timeout=TIMEOUT)
        assert stage_names(result) == [("connect", True, ""), ("tls-hmac", False, "bad hmac")]
        assert not result.ok and result.ports[0].failed_stage == "tls-hmac"
        assert dc.connections == 0


@pytest.mark.asyncio
async def test_relay_that_masks_everything_fails_at_tls_hmac() -> None:
    # A relay holding another secret sends every client of ours to its mask web server.
    async with FakeDC() as dc, HttpMask() as mask:
        async with relay_server(secret=OTHER, dc_port=dc.port, mask_port=mask.port) as server:
            result = await probe_relay(relay_entry(port_of(server)), timeout=TIMEOUT)
        assert stage_names(result) == [("connect", True, ""), ("tls-hmac", False, "bad record")]
        assert mask.received[0][:3] == b"\x16\x03\x01"  # our ClientHello went to the mask host
        assert dc.connections == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["ee", "dd"])
async def test_port_with_nothing_behind_it_fails_at_connect(mode: str, dead_port: int) -> None:
    result = await probe_relay(relay_entry(dead_port, mode), timeout=TIMEOUT)
    assert stage_names(result) == [("connect", False, "refused")]
    assert result.ports[0].rtt_ms is None and result.rtt_ms is None and not result.ok


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["ee", "dd"])
async def test_relay_whose_dc_is_down_fails_at_dc(mode: str, dead_port: int) -> None:
    async with relay_server(dc_port=dead_port) as server:
        result = await probe_relay(relay_entry(port_of(server), mode), timeout=TIMEOUT)
    assert stage_names(result)[-1] == ("dc", False, "closed")
    assert result.ports[0].failed_stage == "dc"
    assert all(s.ok for s in result.ports[0].stages[:-1])


@pytest.mark.asyncio
async def test_relay_whose_dc_stalls_times_out_at_dc() -> None:
    async with FakeDC("stall") as dc, relay_server(dc_port=dc.port) as server:
        result = await probe_relay(relay_entry(port_of(server), "dd"), timeout=0.3)
    assert stage_names(result) == [("connect", True, ""), ("dc", False, "timeout")]


@pytest.mark.asyncio
async def test_silent_server_times_out_at_tls_hmac() -> None:
    async with Silent() as silent:
        result = await probe_relay(relay_entry(silent.port), timeout=0.3)
    assert stage_names(result) == [("connect", True, ""), ("tls-hmac", False, "timeout")]


@pytest.mark.asyncio
async def test_alternative_ports_report_which_respond(dead_port: int) -> None:
    async with FakeDC() as dc, relay_server(dc_port=dc.port, listen=2) as server:
        first, second = port_of(server, 0), port_of(server, 1)
        entry = relay_entry(first, alt_ports=(dead_port, second))
        result = await probe_relay(entry, timeout=TIMEOUT)
    assert result.ports_tried == (first, dead_port, second)
    assert result.working_ports == (first, second)
    assert [p.failed_stage for p in result.ports] == [None, "connect", None]
    assert result.ok


@pytest.mark.asyncio
async def test_concurrency_bounds_open_connections_at_the_relay() -> None:
    async with FakeDC() as dc, relay_server(dc_port=dc.port) as server:
        entries = [relay_entry(port_of(server), mode="ee" if i % 2 else "dd") for i in range(24)]
        results = await probe_relays(entries, timeout=TIMEOUT, concurrency=4)
        assert server.connections.peak == 4  # type: ignore[attr-defined]
    assert [r.relay for r in results] == entries
    assert all(r.ok for r in results)
    assert dc.connections == 24


@pytest.mark.asyncio
async def test_results_keep_input_order_when_some_fail(dead_port: int) -> None:
    async with FakeDC() as dc, relay_server(dc_port=dc.port) as server:
        entries = [
            relay_entry(port_of(server)),
            relay_entry(dead_port),
            relay_entry(port_of(server)),
        ]
        results = await probe_relays(entries, timeout=TIMEOUT, concurrency=3)
    assert [r.ok for r in results] == [True, False, True]
    assert [r.relay for r in results] == entries


@pytest.mark.asyncio
@pytest.mark.parametrize(("timeout", "concurrency"), [(0, 1), (-1.0, 1), (1.0, 0)])
async def test_bad_settings_are_refused_with_a_clear_error(
    timeout: float, concurrency: int
) -> None:
    with pytest.raises(ProxylistError, match="must be"):
        await probe_relays([relay_entry(443)], timeout=timeout, concurrency=concurrency)


# -- the sans-IO core wired to the relay's sans-IO server, in memory -----------------------------


def seeded(seed: int) -> Any:
    rng = random.Random(seed)
    return rng.randbytes


class MemoryRelay:
    """The relay's sans-IO server side (relay.faketls, relay.obfs2) plus the fake DC's answer."""

    def __init__(self, key: bytes, mode: str) -> None:
        self.secrets = [Secret("main", key)]
        self.mode = mode
        self.records = faketls.RecordReader()
        self.hello: faketls.ClientHello | None = None

    def answer_hello(self, data: bytes) -> bytes:
        self.hello = faketls.parse_client_hello(data, self.secrets, NOW)
        return faketls.server_hello(self.hello, 2600)

    def answer_request(self, data: bytes) -> bytes:
        stream = self.records.feed(data) if self.mode == "ee" else data
        client = obfs2.parse_client_header(stream[:64], self.secrets)
        (request,) = FrameDecoder(client.tag).feed(client.decryptor.update(stream[64:]))
        reply = obfs2.ctr(client.encrypt_key, client.encrypt_iv).update(
            encode_frame(client.tag, answer(request.payload))
        )
        return faketls.wrap(reply) if self.mode == "ee" else reply


def drive(client: ProbeClient, data: bytes, chunk: int) -> StagePassed:
    """Feed ``data`` in pieces of ``chunk`` bytes; NEED_DATA until the very last piece."""
    for start in range(0, len(data), chunk):
        client.receive_data(data[start : start + chunk])
        event = client.next_event()
        if start + chunk < len(data):
            assert event is NEED_DATA
    assert isinstance(event, StagePassed)
    return event


@pytest.mark.parametrize("mode", ["ee", "dd", "classic"])
@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_core_against_the_relays_server_code_in_memory(mode: str, chunk: int) -> None:
    server = MemoryRelay(KEY, mode)
    client = ProbeClient(relay_entry(443, mode), now=NOW, entropy=seeded(chunk))
    if mode == "ee":
        passed = drive(client, server.answer_hello(client.initial), chunk)
        assert passed.stage == "tls-hmac" and client.stage == "dc"
        assert server.hello is not None and server.hello.sni == DOMAIN
        assert server.hello.timestamp == int(NOW)
        request = passed.send
        assert request.startswith(faketls.CCS_RECORD + b"\x17\x03\x03")
    else:
        request = client.initial
    assert drive(client, server.answer_request(request), chunk) == StagePassed("dc")
    assert client.stage is None
    with pytest.raises(RuntimeError, match="finished"):
        client.next_event()


def test_client_hello_is_517_bytes_shaped_like_tdlib() -> None:
    hello = client_hello(KEY, DOMAIN, NOW, seeded(1))
    assert len(hello) == 517
    assert hello[:11] == bytes.fromhex("1603010200010001fc0303")
    parsed = faketls.parse_client_hello(hello, [Secret("m", KEY)], NOW)
    assert parsed.cipher_suite == b"\x13\x01" and parsed.sni == DOMAIN
    assert hello != client_hello(KEY, DOMAIN, NOW, seeded(2))
    long_domain = "a" * 200 + ".example"
    assert (
        faketls.parse_client_hello(client_hello(KEY, long_domain, NOW), [Secret("m", KEY)], NOW).sni
        == long_domain
    )


@pytest.mark.parametrize("seed", range(20))
def test_x25519_key_share_is_a_point_on_the_curve(seed: int) -> None:
    p = 2**255 - 19
    x = int.from_bytes(x25519_public(seeded(seed)), "little")
    rhs = (x**3 + 486662 * x**2 + x) % p
    assert x < p and pow(rhs, (p - 1) // 2, p) == 1  # Euler's criterion: a square, so on the curve


def test_genuine_response_replayed_to_another_hello_fails_the_hmac() -> None:
    server = MemoryRelay(KEY, "ee")
    recorded = server.answer_hello(client_hello(KEY, DOMAIN, NOW, seeded(1)))
    ours = client_hello(KEY, DOMAIN, NOW, seeded(2))
    with pytest.raises(ProbeError) as caught:
        parse_server_response(recorded, KEY, ours[11:43])
    assert caught.value.detail == "bad hmac"


def test_response_from_a_server_with_another_key_fails_the_hmac() -> None:
    hello = client_hello(KEY, DOMAIN, NOW, seeded(3))
    parsed = faketls.parse_client_hello(hello, [Secret("m", KEY)], NOW)
    forged = faketls.server_hello(
        faketls.ClientHello(
            Secret("x", OTHER), parsed.random, parsed.session_id, b"\x13\x01", DOMAIN, int(NOW)
        ),  # fmt: skip
        3000,
    )
    with pytest.raises(ProbeError, match="bad hmac"):
        parse_server_response(forged, KEY, hello[11:43])
    assert isinstance(parse_server_response(forged, OTHER, hello[11:43]), ServerResponse)


def test_closing_mid_answer_is_closed_not_need_data() -> None:
    server = MemoryRelay(KEY, "ee")
    client = ProbeClient(relay_entry(443), now=NOW)
    client.receive_data(server.answer_hello(client.initial)[:50])
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    with pytest.raises(ProbeError) as caught:
        client.next_event()
    assert caught.value.detail == "closed"


def test_res_pq_with_another_nonce_or_a_transport_error_is_refused() -> None:
    from tests.relay.fakedc import make_res_pq

    nonce = os.urandom(16)
    assert parse_res_pq(make_res_pq(nonce), nonce).nonce == nonce
    with pytest.raises(ProbeError, match="not ours"):
        parse_res_pq(make_res_pq(os.urandom(16)), nonce)
    with pytest.raises(ProbeError, match="transport error -404"):
        parse_res_pq((-404).to_bytes(4, "little", signed=True), nonce)
