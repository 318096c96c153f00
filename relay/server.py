"""The relay's asyncio adapter: accept, hand-shake, mask or relay, with bounded buffers.

Theory of operation
-------------------
Each client connection is an ``asyncio.BufferedProtocol`` (no task per connection, so an idle
connection costs only its protocol object and two sockets). It goes through three states:

* **handshake**: bytes are buffered (bounded) until a fake-TLS ClientHello record or a 64-byte
  obfuscated2 header is complete, then validated with ``relay.faketls`` / ``relay.obfs2``;
* **relay**: a second protocol talks to the DC. Upload is decrypted with the client's keystream
  and re-encrypted with ours; download uses fast mode and passes untouched (only wrapped in TLS
  records for ``ee`` clients). Each side pauses reading while the other side's write buffer is
  above the high-water mark (zero: ``relay.flow``), so a slow peer never makes memory grow;
* **mask**: a client that fails at any point before a valid handshake is connected to the mask
  host; every byte it sent so far is forwarded, then both directions are piped.

One timer per relay (not per connection) enforces the handshake and idle timeouts.

Moving the bytes themselves, cheaply, is ``relay.flow``'s part.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from relay import faketls, obfs2
from relay.dc import DEFAULT_DCS, dc_address
from relay.errors import HandshakeError, ListenError
from relay.flow import HIGH_WATER, SCRATCH, Side, send
from relay.metrics import Metrics
from relay.tuning import describe_aes, tune_aes

log = logging.getLogger("kopir.relay")

MAX_HELLO = faketls.RECORD_HEADER + faketls.MAX_RECORD_PAYLOAD
# A ClientHello record starts so; an obfuscated2 header may start with 0x16 too (1 in 256).
TLS_START = b"\x16\x03\x01"


@dataclass(frozen=True)
class RelaySettings:
    """Everything the relay needs; ``kopir.config`` builds it from ``[relay]``."""

    listen: tuple[tuple[str, int], ...]
    secrets: tuple[obfs2.Secret, ...]
    modes: frozenset[str] = frozenset({"ee", "dd"})
    tls_domain: str = "example.com"
    mask_host: str | None = None
    """None: the TLS domain itself (port ``mask_port``)."""
    mask_port: int = 443
    dc: dict[int, tuple[str, int]] = field(default_factory=dict, hash=False)
    """Overrides of the built-in DC table, by DC number."""
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_connections: int = 10_000
    max_connections_per_secret: int = 0
    """0: no per-secret limit."""
    skew_past: float = 600.0
    """How far a fake-TLS client's clock may be behind ours (seconds)."""
    skew_future: float = 1200.0
    """How far it may be ahead."""
    replay_cache: int = 100_000
    strict_sni: bool = False
    metrics_listen: tuple[str, int] | None = None


class ReplayCache:
    """A bounded set of handshake fingerprints; the oldest are forgotten first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, key: bytes) -> bool:
        """True when ``key`` was recorded before; records it otherwise."""
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return False


class Relay:
    """A running relay: listeners, live connections, settings that SIGHUP can change."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.replays = ReplayCache(settings.replay_cache)
        self.connections: set[ClientProtocol] = set()
        self.per_secret: Counter[str] = Counter()
        self.servers: list[asyncio.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._metrics_server: asyncio.AbstractServer | None = None
        self.aes_speedup = 1.0
        """GCM's speed over CTR's on this CPU, measured by ``start`` (see relay.keystream)."""

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for srv in self.servers for s in srv.sockets]

    async def start(self) -> None:
        """Listen on every address and the metrics address; ``ListenError`` (with nothing
        left listening) when one of them cannot be had."""
        loop = asyncio.get_running_loop()
        self.aes_speedup = tune_aes()
        log.info("upload keystreams: %s", describe_aes(self.aes_speedup))
        what, host, port = "clients", "", 0
        try:
            for host, port in self.settings.listen:
                server = await loop.create_server(
                    lambda: ClientProtocol(self), host, port, reuse_address=True, backlog=4096
                )
                self.servers.append(server)
            if self.settings.metrics_listen:
                what, (host, port) = "metrics", self.settings.metrics_listen
                self._metrics_server = await self.metrics.serve(host, port)
        except OSError as exc:
            await self.stop()
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            why = exc.strerror or str(exc)
            raise ListenError(f"cannot listen for {what} on {where}: {why}") from None
        self._timer = loop.call_later(1.0, self._sweep)

    def reload(self, secrets: Sequence[obfs2.Secret]) -> None:
        """New secrets for new connections; live connections keep the secret they used."""
        self.settings = replace(self.settings, secrets=tuple(secrets))

    async def stop(self) -> None:
        """Stop accepting, then close every connection."""
        for server in self.servers:
            server.close()
        if self._metrics_server:
            self._metrics_server.close()
        if self._timer:
            self._timer.cancel()
        for conn in list(self.connections):
            conn.close()
        for server in self.servers:
            await server.wait_closed()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._timer = asyncio.get_running_loop().call_later(1.0, self._sweep)


class _Peer(Side):
    """The far side (DC or mask host) of a client connection."""

    def __init__(self, client: ClientProtocol) -> None:
        super().__init__()
        self.client = client

    def received(self, view: memoryview) -> None:
        self.client.from_peer(view, self)

    def relaying(self) -> bool:
        return not self.client.closed

    def other(self) -> Side | None:
        return self.client

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()


class ClientProtocol(Side):
    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay
        self.peer: _Peer | None = None
        self.buffer = bytearray()
        self.state = "handshake"
        self.last_active = self.started = time.monotonic()
        self.tls: faketls.RecordReader | None = None
        self.decryptor: Any = None
        self.encryptor: Any = None
        self.secret: obfs2.Secret | None = None
        self.closed = False

    # -- life cycle ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.relay.connections) >= self.relay.settings.max_connections:
            self.relay.metrics.inc("relay_refused_total", reason="max-connections")
            cast(asyncio.Transport, transport).abort()
            self.closed = True
            return
        self.relay.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.connections.discard(self)
        if self.secret is not None and self.state == "relay":
            self.relay.per_secret[self.secret.name] -= 1
            self.relay.metrics.add("relay_connections_active", -1, secret=self.secret.name)
        for transport in (self.transport, self.peer.transport if self.peer else None):
            if transport is not None:
                transport.close()

    def check_timeouts(self, now: float) -> None:
        settings = self.relay.settings
        if self.state == "handshake" and now - self.started > settings.handshake_timeout:
            self.relay.metrics.inc("relay_handshake_failures_total", reason="timeout", secret="")
            self.close()
        elif now - self.last_active > settings.idle_timeout:
            self.close()

    def other(self) -> Side | None:
        return self.peer

    def pause_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()

    def pause_reading(self) -> None:
        if self.transport and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport and not self.closed:
            self.transport.resume_reading()

    # -- data ----------------------------------------------------------------------------

    def received(self, view: memoryview) -> None:
        self.data_received(view)

    def relaying(self) -> bool:
        return self.state == "relay" and not self.closed

    def data_received(self, data: bytes | memoryview) -> None:
        """Handle bytes from the client; ``data`` may be a view that dies on return."""
        self.last_active = time.monotonic()
        if self.state == "relay":
            self._upload(data)
        elif self.state == "mask":
            self._to_peer(data)
        elif self.state == "tls-header":
            self._tls_header(data)
        else:
            self.buffer += data
            self._handshake()

    def from_peer(self, data: memoryview, source: Side) -> None:
        """Handle bytes that ``source`` (the DC or mask host) read; ``data`` is a view that
        dies on return."""
        self.last_active = time.monotonic()
        if self.transport is None or self.closed:
            return
        parts: list[bytes | memoryview] = [data]
        if self.state == "relay":
            assert self.secret is not None
            self.relay.metrics.add("relay_bytes_total", len(data), secret=self.secret.name,
                                   direction="down")  # fmt: skip
            if self.tls is not None:
                parts = faketls.wrap_parts(data)
        if not source.wrote(send(self.transport, self.fd, parts)):
            self.close()

    def _to_peer(self, data: bytes | memoryview) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if not self.wrote(send(peer.transport, peer.fd, [data])):
                self.close()
        else:
            self.buffer += data  # the peer is still connecting: bounded by the pause below
            if len(self.buffer) > HIGH_WATER and self.transport:
                self.transport.pause_reading()

    def _upload(self, data: bytes | memoryview) -> None:
        if self.tls is not None:
            try:
                parts = self.tls.payloads(data)
            except HandshakeError:
                self.close()
                return
            if not parts:
                return
            # One copy in C beats a decrypt call per 16 KiB record in Python.
            data = parts[0] if len(parts) == 1 else b"".join(parts)
        size = self.decryptor.update_into(data, SCRATCH)  # the client's keystream off
        if not size:
            return
        assert self.secret is not None
        self.relay.metrics.add("relay_bytes_total", size, secret=self.secret.name,
                               direction="up")  # fmt: skip
        self.encryptor.update_into(SCRATCH[:size], SCRATCH)  # our keystream on, in place
        self._to_peer(SCRATCH[:size])

    # -- handshake -----------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            result = self._try_handshake()
        except HandshakeError as exc:
            self.relay.metrics.inc("relay_handshake_failures_total", reason=exc.reason, secret="")
            self._mask()
            return
        if result is not None:
            stream, rest = result
            self._start_relay(stream, rest)

    def _try_handshake(self) -> tuple[obfs2.ClientStream, bytes] | None:
        """None while more bytes are needed; raises HandshakeError to mask the client."""
        buf = bytes(self.buffer)
        settings = self.relay.settings
        if "ee" in settings.modes and TLS_START.startswith(buf[:3]):
            if len(buf) < len(TLS_START):
                return None  # could still be either
            self._tls_handshake(buf)
            return None
        if not _could_be_obfs2(settings) or obfs2.never_a_header(buf):
            raise HandshakeError("not-mtproto", "first bytes are another protocol")
        if len(buf) < obfs2.HEADER_SIZE:
            return None
        tags = _plain_tags(settings.modes)
        stream = obfs2.parse_client_header(buf[:64], settings.secrets, tags)
        if self.relay.replays.seen(buf[8:56]):
            self.relay.metrics.inc("relay_replays_total", secret=stream.secret.name)
            raise HandshakeError("replay", "obfuscated2 header seen before")
        return stream, buf[64:]

    def _tls_handshake(self, buf: bytes) -> None:
        settings = self.relay.settings
        if len(buf) < faketls.RECORD_HEADER:
            return
        total = faketls.hello_length(buf[:5])
        if total > MAX_HELLO:
            raise HandshakeError("not-tls", "ClientHello too long")
        if len(buf) < total:
            return
        hello = faketls.parse_client_hello(
            buf[:total], settings.secrets, time.time(), settings.skew_past, settings.skew_future
        )
        if settings.strict_sni and hello.sni != settings.tls_domain:
            raise HandshakeError("bad-sni", f"SNI {hello.sni!r}")
        if self.relay.replays.seen(hello.random):
            self.relay.metrics.inc("relay_replays_total", secret=hello.secret.name)
            raise HandshakeError("replay", "ClientHello seen before")
        assert self.transport is not None
        self.transport.write(faketls.server_hello(hello, random.randint(2500, 4700)))
        self.tls = faketls.RecordReader()
        self.secret = hello.secret
        self.state = "tls-header"
        self.buffer = bytearray()
        self._tls_header(buf[total:])

    def _tls_header(self, data: bytes | memoryview) -> None:
        """After our ServerHello: collect the obfuscated2 header from the client's records."""
        assert self.tls is not None and self.secret is not None
        try:
            self.buffer += self.tls.feed(data)
            if len(self.buffer) < obfs2.HEADER_SIZE:
                return
            stream = obfs2.parse_client_header(bytes(self.buffer[:64]), [self.secret])
        except HandshakeError as exc:
            # The client proved it knows the secret, so this is a broken client, not a
            # prober: masking now would show a TLS session turning into HTTP. Just close.
            self.relay.metrics.inc("relay_handshake_failures_total", reason=exc.reason,
                                   secret=self.secret.name)  # fmt: skip
            self.close()
            return
        self._start_relay(stream, bytes(self.buffer[64:]))

    def _start_relay(self, stream: obfs2.ClientStream, rest: bytes) -> None:
        name = stream.secret.name
        limit = self.relay.settings.max_connections_per_secret
        if limit and self.relay.per_secret[name] >= limit:
            self.relay.metrics.inc("relay_refused_total", reason="secret-limit")
            self.close()
            return
        self.state = "relay"
        self.secret = stream.secret
        self.relay.per_secret[name] += 1
        self.relay.metrics.inc("relay_connections_total", secret=name)
        self.relay.metrics.add("relay_connections_active", 1, secret=name)
        self.decryptor = stream.decryptor
        dc = obfs2.dc_header(stream.tag, stream.dc, stream.encrypt_key, stream.encrypt_iv)
        self.encryptor = dc.encryptor
        self.buffer = bytearray(dc.header)
        if rest:
            self.relay.metrics.add("relay_bytes_total", len(rest), secret=name, direction="up")
            self.buffer += self.encryptor.update(self.decryptor.update(rest))
        host, port = dc_address(stream.dc, self.relay.settings.dc)
        self._connect(host, port)

    def _mask(self) -> None:
        self.state = "mask"
        self.relay.metrics.inc("relay_masked_total")
        settings = self.relay.settings
        self._connect(settings.mask_host or settings.tls_domain, settings.mask_port)

    def _connect(self, host: str, port: int) -> None:
        if self.transport:
            self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._open_peer(host, port))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _open_peer(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, peer = await asyncio.wait_for(
                loop.create_connection(lambda: _Peer(self), host, port), timeout=10
            )
        except (OSError, TimeoutError) as exc:
            log.debug("cannot reach %s:%s: %s", host, port, exc)
            self.close()
            return
        if self.closed:
            if peer.transport:
                peer.transport.close()
            return
        self.peer = peer
        if self.buffer and peer.transport:
            peer.transport.write(bytes(self.buffer))
        self.buffer = bytearray()
        self.resume_reading()


_TASKS: set[asyncio.Task[None]] = set()


def _plain_tags(modes: frozenset[str]) -> list[bytes]:
    tags = []
    if "dd" in modes:
        tags.append(obfs2.PADDED)
    if "classic" in modes:
        tags += [obfs2.ABRIDGED, obfs2.INTERMEDIATE]
    return tags


def _could_be_obfs2(settings: RelaySettings) -> bool:
    return bool(_plain_tags(settings.modes))


async def serve(settings: RelaySettings) -> Relay:
    relay = Relay(settings)
    await relay.start()
    return relay


__all__ = ["DEFAULT_DCS", "Relay", "RelaySettings", "ReplayCache", "serve"]
