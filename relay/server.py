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
  above the high-water mark (zero, below), so a slow peer never makes memory grow;
* **mask**: a client that fails at any point before a valid handshake is connected to the mask
  host; every byte it sent so far is forwarded, then both directions are piped.

One timer per relay (not per connection) enforces the handshake and idle timeouts.

Moving bytes cheaply
--------------------
Most of a relay's CPU goes to the kernel's TCP copies, which cost per call as well as per
byte, and to the two AES passes on upload; everything else is kept off the per-byte path
(``bench/relay_bench.py`` measures it):

* both sides read into one 256 KiB receive buffer shared by every connection (the loop runs
  one callback at a time), so a read itself allocates nothing;
* upload's record payloads are found and cut in C (``faketls.RecordReader.payloads``),
  joined (one copy, in C), decrypted into one shared scratch buffer and re-encrypted there
  in place: two cipher calls per read, not two per record. Past a stream's first MiB, both
  keystreams come from OpenSSL's AES-GCM code where that is faster than its AES-CTR code
  (twice as fast with VAES; ``relay.keystream``, measured once by ``start``).
  Reading with ``recvmsg_into`` into a header area and a payload area, so that the kernel
  lays the payloads end to end, was tried and measured: with tdlib's 2,878-byte records
  the copy into 183 segments per read cost the kernel as much as the join saved (user time
  -0.06, system time +0.07 CPU-s/GiB), for a descriptor more per client;
* asyncio's own loop reads a socket once per wake-up, so on it a relaying side reads up to
  ``MORE_READS`` more times itself (``os.readv`` into the same buffer) while its socket has
  bytes and the other side takes them, as libuv (uvloop) does anyway: fewer trips through
  the loop (``bench/relay_bench.py``: about 5% less CPU per GiB both ways). An error or the
  end of the stream is left to asyncio's own next read, except that a read error aborts;
* ``_send`` hands the result (for ``ee`` download: record headers and views of the payload)
  to the socket in one ``writev`` while the transport has nothing queued, and copies only
  what the socket did not take into the transport, which then owns it. So a view of a shared
  buffer never outlives its callback, whatever the transport does with what it is given;
* the write-buffer limits are zero: a side stops reading as soon as the other side's
  transport holds anything, so at most the unsent rest of one read waits in user space per
  direction, and the kernel's socket buffers do the rest of the queueing;
* after a write that the socket cut short, a side's reads fit the room left in the other
  side's socket (``_Side.throttled``, ``_send_room``: its send buffer less what it still
  holds, one ``getsockopt`` and one ``ioctl``), at least one record (16 KiB) and at most the
  whole buffer; once the room is back to a whole buffer, reads are 256 KiB again with no
  system calls of their own. A fast peer's socket soon has room again, so it costs one pair
  of calls per cut-short write. A slow one (a phone on a throttled link, with a small TCP
  window) leaves about one record waiting in user space rather than most of 256 KiB, so
  thousands of slow clients fit on a small VPS.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import socket
import sys
import termios
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from relay import faketls, obfs2
from relay.dc import DEFAULT_DCS, dc_address
from relay.errors import HandshakeError, ListenError
from relay.metrics import Metrics
from relay.tuning import tune_aes

log = logging.getLogger("kopir.relay")

HIGH_WATER = 0
LOW_WATER = 0
MAX_HELLO = faketls.RECORD_HEADER + faketls.MAX_RECORD_PAYLOAD
# A ClientHello record starts so; an obfuscated2 header may start with 0x16 too (1 in 256).
TLS_START = b"\x16\x03\x01"
# Shared by all connections; see "Moving bytes cheaply". AES-CTR's update_into wants 15 spare
# bytes past the output; a read plus one pending record always fits in the scratch buffer.
_RECEIVE = memoryview(bytearray(256 * 1024))
_SCRATCH = memoryview(bytearray(len(_RECEIVE) + MAX_HELLO + 512))
MIN_READ = faketls.MAX_RECORD_PAYLOAD
MORE_READS = 8
"""Reads a relaying side makes itself after each read of asyncio's loop, while its socket
has more: asyncio's loop reads once per wake-up (see "Moving bytes cheaply"). Nine reads
(2.25 MiB) take about a millisecond, so other connections wait no longer than that."""


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
        log.info("AES-GCM code runs %.2fx as fast as AES-CTR code here", self.aes_speedup)
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


class _Side(asyncio.BufferedProtocol):
    """What both sides of a relayed connection share: the transport with zero write-buffer
    limits, its socket descriptor for ``_send``, and reads into the shared buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.throttled = False
        self.more_reads = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike: cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.fd = _fileno(transport)
        if self.fd >= 0 and isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop):
            self.more_reads = MORE_READS  # libuv (uvloop) already reads until the socket is dry

    def buffer_updated(self, nbytes: int) -> None:
        with _RECEIVE[:nbytes] as view:
            self.received(view)
        more = self.more_reads if self.relaying() else 0
        transport = self.transport
        while more and not self.throttled and transport and transport.is_reading():
            more -= 1
            try:
                nbytes = os.readv(self.fd, [self.get_buffer(-1)])
            except (BlockingIOError, InterruptedError):
                return  # dry: asyncio's loop waits for more as usual
            except OSError:
                transport.abort()  # as asyncio does on a read error: connection_lost follows
                return
            if not nbytes:
                return  # the peer is done: asyncio's own next read sees the end too
            with _RECEIVE[:nbytes] as view:
                self.received(view)

    def received(self, view: memoryview) -> None:
        """Handle bytes this side read into the shared buffer (``view`` dies on return)."""
        raise NotImplementedError

    def relaying(self) -> bool:
        """Whether reads may be repeated without the loop (see ``MORE_READS``)."""
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self.throttled:
            return _RECEIVE
        other = self.other()
        room = _send_room(other.transport, other.fd) if other else len(_RECEIVE)
        if room >= len(_RECEIVE):
            self.throttled = False
            return _RECEIVE
        return _RECEIVE[: max(MIN_READ, room)]

    def other(self) -> _Side | None:
        """The side this side's reads are written to, once there is one."""
        raise NotImplementedError

    def wrote(self, left: int | None) -> bool:
        """Note a write of what this side read that left ``left`` bytes queued in the other
        side's transport (see "Moving bytes cheaply"); False when that write failed."""
        if left is None:
            return False
        if left:
            self.throttled = True
        return True


class _Peer(_Side):
    """The far side (DC or mask host) of a client connection."""

    def __init__(self, client: ClientProtocol) -> None:
        super().__init__()
        self.client = client

    def received(self, view: memoryview) -> None:
        self.client.from_peer(view, self)

    def relaying(self) -> bool:
        return not self.client.closed

    def other(self) -> _Side | None:
        return self.client

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()


class ClientProtocol(_Side):
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

    def other(self) -> _Side | None:
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

    def from_peer(self, data: memoryview, source: _Side) -> None:
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
        if not source.wrote(_send(self.transport, self.fd, parts)):
            self.close()

    def _to_peer(self, data: bytes | memoryview) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if not self.wrote(_send(peer.transport, peer.fd, [data])):
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
        size = self.decryptor.update_into(data, _SCRATCH)  # the client's keystream off
        if not size:
            return
        assert self.secret is not None
        self.relay.metrics.add("relay_bytes_total", size, secret=self.secret.name,
                               direction="up")  # fmt: skip
        self.encryptor.update_into(_SCRATCH[:size], _SCRATCH)  # our keystream on, in place
        self._to_peer(_SCRATCH[:size])

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


def _fileno(transport: asyncio.BaseTransport) -> int:
    """The transport's socket descriptor, or -1 (then ``_send`` always goes through it)."""
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (AttributeError, OSError, ValueError):
        return -1


def _send_room(transport: asyncio.Transport | None, fd: int) -> int:
    """About how many more bytes the socket under ``transport`` takes now: its send buffer
    less the bytes it still holds. A whole receive buffer's worth where that is unknown."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or fd < 0:
        return len(_RECEIVE)
    try:
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        held = fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(4))  # SIOCOUTQ, on a socket
    except (OSError, AttributeError, ValueError):
        return len(_RECEIVE)
    return int(size) - int.from_bytes(held, sys.byteorder, signed=True)


def _send(transport: asyncio.Transport, fd: int, parts: list[bytes | memoryview]) -> int | None:
    """Write ``parts`` in order, though they may be views that die when the caller returns.

    While the transport has nothing queued, the socket takes what it can in one ``writev``;
    the rest (all of it otherwise) is copied into the transport, which keeps it in order
    behind anything already queued. Returns how many bytes went to the transport, or None
    when the socket has failed.
    """
    if transport.is_closing():
        return 0
    sent = 0
    if fd >= 0 and not transport.get_write_buffer_size():
        try:
            sent = os.writev(fd, parts)
        except (BlockingIOError, InterruptedError):
            pass  # the socket is full: all of it goes to the transport
        except OSError as exc:
            log.debug("send failed: %s", exc)
            return None
        if sent == sum(map(len, parts)):  # the usual case: no Python step per part
            return 0
    rest: list[bytes | memoryview] = []
    for part in parts:
        if sent >= len(part):
            sent -= len(part)
            continue
        rest.append(part[sent:])
        sent = 0
    if not rest:
        return 0
    queued = b"".join(rest)
    transport.write(queued)
    return len(queued)


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
