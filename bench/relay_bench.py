"""The relay's CPU and memory costs, measured against its own process in one run.

The relay runs as ``kopir relay serve`` in a process of its own, on 127.0.0.1, with fake
Telegram DCs (``tests.relay.fakedc.FakeDC``) and fake-TLS clients (``tests.relay.tlsclient``)
in this process. Only the relay's own CPU time (utime + stime from ``/proc/PID/stat``) and
memory (VmRSS from ``/proc/PID/status``) count, never wall time (DESIGN.md §10). What it
measures, per event loop:

- ``upload_cpu_s_per_gib``: N fake-TLS clients push the bytes through the relay to a ``sink``
  DC. The clients send one random 512 KiB message (tdlib's largest file part), cut into
  records as tdlib cuts each message (2,878-byte payloads, ``CLIENT_RECORD``, the last one
  shorter), over and over without encrypting it: the relay decrypts and re-encrypts it all
  the same, and the sink does not look at it, so the relay does exactly its real work while
  this process spares an AES pass. CPU is counted from when every client's DC link is up
  until the sink holds every byte.
- ``download_cpu_s_per_gib``: a ``source`` DC sends the bytes to N clients, which count them
  raw (no decryption). CPU is counted from after the TLS handshakes, so it includes the N
  headers and DC dials (a few milliseconds) as well as the transfer.
- ``crypto_floor_cpu_s_per_gib``: one AES-256-CTR pass (``cryptography``) over the same bytes
  in 64 KiB chunks, CPU time of this process; ``upload_floor_ratio`` and
  ``download_floor_ratio`` divide each direction by the floor measured next to it (targets:
  at most 4 and 2). ``*_user_cpu_s_per_gib``, ``*_system_cpu_s_per_gib`` and
  ``*_page_faults_per_gib`` split the relay's time and count its minor page faults, to show
  where it goes: the floor is user-space AES alone, while the relay's figure also carries the
  kernel's loopback TCP work and the zeroed pages its buffers take. The relay inherits this
  process's environment, so ``MALLOC_*`` variables set here change the figures.
- ``upload_socket_floor_cpu_s_per_gib`` (and ``download_...``, each measured next to its
  transfer): the least CPU time any Python relay spends to move the bytes at all. A minimal
  forwarder process (``FORWARDER`` below, work ``plain``: blocking ``recv_into`` a reused
  buffer, then ``sendall``; no crypto, no framing) sits between a source and a sink in this
  process, on the same loopback TCP, and is counted the same way as the relay.
  ``upload_socket_ratio`` and ``download_socket_ratio`` divide each direction by it. The
  kernel's share of loopback TCP (the copies in and out, and the receiving socket's softirq
  work, which loopback charges to the sender) is part of both, so this says how much of the
  relay's cost is ours.
  ``socket_floor_crypto_ratio`` is the socket floor over the crypto floor (both directions'
  samples): the forwarder's own user time is a few percent of it, so it is the kernel's price
  of moving the bytes through any relay that copies them through user space, in any language.
  Where it exceeds 2, the download target is out of reach on that machine, and the upload
  target too unless AES runs faster than the floor (two passes on top; see
  ``bulk_keystream``).
- ``upload_work_floor_cpu_s_per_gib`` (and ``download_...``): the same forwarder doing only
  the work that direction needs, with the relay's own sans-IO code and no event loop. Upload:
  TLS records in, their payloads joined, decrypted and encrypted again (two AES-256-CTR
  passes, with the relay's keystreams: see ``bulk_keystream`` below), ``sendall``.
  Download (fast mode, no crypto): each read wrapped in TLS records and sent with one
  ``sendmsg``. ``*_work_floor_crypto_ratio`` is that over the crypto floor: the
  best ``*_floor_ratio`` a relay built this way can reach on the machine. ``*_work_ratio`` is
  the relay over it: what asyncio, the protocol objects and the bookkeeping add.
- ``download_splice_floor_cpu_s_per_gib``: the download work floor of a relay that never
  copies the bytes through user space (work ``splice``): the DC's bytes are spliced into a
  pipe, and from it into the client's socket one record payload at a time, each after its
  5-byte record header (``sendall`` with ``MSG_MORE``). ``download_splice_floor_crypto_ratio``
  is that over the crypto floor. Records carry at most 16 KiB (larger ones would stand out
  to DPI), so this costs two system calls per 16 KiB; it says whether a zero-copy data path
  would reach the download target here.
- ``aes_gcm_speedup`` and ``bulk_keystream``: how much faster OpenSSL's AES-GCM code runs
  than its AES-CTR code here (256 KiB, ``relay.tuning.gcm_speedup``), and so which one
  computes the relay's upload keystreams past their first MiB (``gcm`` from a speed-up of
  ``relay.tuning.GCM_PAYS``; see ``relay.keystream``). The crypto floor stays one pass of
  ``cryptography``'s AES-256-CTR, so with ``gcm`` the relay's two passes together cost about
  one floor, not two, and ``upload_floor_ratio`` counts that gain.
- ``handshakes_per_cpu_s``: fake-TLS handshakes, a few at a time; each client closes right
  after the server's three records, so the relay never dials a DC (target: at least 3000).
- ``idle_connections`` and ``rss_bytes_per_idle_connection``: connections opened in steps up
  to a cap, each past its handshake and obfuscated2 header (so the relay has dialled the sink
  DC), then silent; the relay's RSS is read at each step and the figure is the least-squares
  slope of RSS against the count (target: at most 16 KiB). Both the relay and this process
  hold two descriptors per connection, so RLIMIT_NOFILE must allow twice the count: the
  bench raises it (the hard limit too, when run as root), and when it cannot, says so and
  stops at what fits.

Peers: this process's sockets (the fake clients and DCs, and the forwarders' source and sink)
use the ``reno`` congestion control (``--peer-congestion``; ``system`` keeps the system's
default), set before they connect or accept; the relay's and the forwarders' own sockets keep
the system's default. A pacing congestion control such as ``bbr`` (without the ``fq`` qdisc)
sends each peer's data from timers, in softirq time that the kernel's tick accounting charges
to whichever task is running: mostly the relay, the busiest one. With ``bbr`` peers here the
relay's figures rose by a quarter (upload 0.80 -> 1.04, download 0.38 -> 0.60 CPU-s/GiB) for
work that was not its own. ``peer_congestion`` and ``system_congestion`` are printed.

Each round starts one relay per event loop, asyncio's and (when installed) uvloop's, in
alternation (A B A B); the figures are medians over the rounds, and the ratios medians of
per-round ratios. uvloop figures carry a ``uvloop_`` prefix. Run from anywhere:

    python bench/relay_bench.py [--quick] [--no-uvloop] [--mib 512] [--clients 8]
        [--handshakes 2000] [--idle 10000] [--rounds 3]

``--quick`` (for CI) uses 32 MiB, 300 handshakes, 1000 idle connections and 2 rounds. At
32 MiB the relay's CPU spans only a few clock ticks (10 ms each), so its figures are coarse,
and a ratio whose divisor saw no tick at all is ``nan`` (left out of the medians).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.relay, which is not installed

import procstat  # noqa: E402
from procstat import Usage  # noqa: E402

from relay import faketls, obfs2  # noqa: E402
from relay.tuning import GCM_PAYS, gcm_speedup  # noqa: E402
from tests.relay.fakedc import FakeDC  # noqa: E402
from tests.relay.tlsclient import (  # noqa: E402
    BadServerHello,
    TlsClient,
    check_server_hello,
    client_hello,
    read_server_hello,
)

HOST = "127.0.0.1"
DOMAIN = "example.com"
KEY = os.urandom(16)
CHUNK = 64 * 1024
GIB = 1 << 30
SINK_DC, SOURCE_DC = 2, 3
CLIENT_RECORD = 2878
"""Upload record payload: what tdlib puts in each record (``MAX_TLS_PACKET_LENGTH``)."""
UPLOAD_MESSAGE = 512 * 1024
"""Bytes per upload message: tdlib's largest file part. Each is cut into records on its own,
so every 182 records of ``CLIENT_RECORD`` bytes end with a shorter one."""
PEER_CONGESTION = "reno"
"""TCP congestion control of this process's sockets (see "Peers" in the docstring)."""
CONNECT_BATCH = 64
"""Fake-TLS connections opened at once: well under the fake DC's accept backlog (100)."""
FD_SPARE = 200
"""Descriptors kept free in this process besides two per connection."""

CONFIG = """\
[relay]
listen = ["127.0.0.1:0"]
modes = ["ee", "dd"]
tls_domain = "{domain}"
mask_host = "127.0.0.1"
mask_port = 9      # nothing there; not used by valid clients
metrics_listen = ""
[relay.dc]
"{sink}" = "127.0.0.1:{sink_port}"
"{source}" = "127.0.0.1:{source_port}"
[relay.limits]
max_connections = 20000
idle_timeout = "1h"
handshake_timeout = "60s"
[[relay.secrets]]
name = "bench"
secret = "{key}"
"""
T = TypeVar("T")
Samples = dict[str, list[float]]
LISTENING = re.compile(r"relay listening on 127\.0\.0\.1:(\d+) \(.*; (\w+) loop\)")


class BenchError(Exception):
    """The relay or a peer misbehaved; the message says what was seen."""


_peer_congestion: bytes | None = PEER_CONGESTION.encode()


def unpaced(sock: socket.socket | asyncio.trsock.TransportSocket) -> None:
    """Give one of this process's sockets the peers' congestion control (before it connects,
    or a listener before it accepts: connections start with it)."""
    if _peer_congestion is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, _peer_congestion)


def unpaced_server(server: asyncio.Server) -> asyncio.Server:
    for sock in server.sockets:
        unpaced(sock)
    return server


async def dialled(port: int) -> socket.socket:
    """A socket of this process connected to ``HOST:port`` (with the peers' congestion
    control from its first packet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        unpaced(sock)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Sizes:
    total: int
    """Bytes moved per transfer (each direction), split evenly over the clients."""
    clients: int
    handshakes: int
    parallel: int
    """Handshakes in flight at once."""
    idle: int
    """The most idle connections to open."""
    idle_steps: int


# -- the relay process --------------------------------------------------------------------


@dataclass
class RelayProcess:
    proc: asyncio.subprocess.Process
    port: int

    def usage(self) -> Usage:
        return procstat.usage(self.proc.pid)

    def rss(self) -> int:
        found = procstat.rss(self.proc.pid)
        if found is None:
            raise BenchError(f"no VmRSS in /proc/{self.proc.pid}/status")
        return found

    async def settled(self) -> Usage:
        """Usage once the relay has stopped using CPU (at most about 5 s of waiting)."""
        last = self.usage()
        for _ in range(100):
            await asyncio.sleep(0.05)
            now, last = last, self.usage()
            if now.total == last.total:
                break
        return last


@contextlib.asynccontextmanager
async def relay_process(loop: str, dcs: dict[int, int], work: Path) -> AsyncIterator[RelayProcess]:
    """Start ``kopir relay serve`` with ``loop``; SIGTERM it and wait on the way out."""
    config = work / f"relay-{loop}.toml"
    text = CONFIG.format(
        domain=DOMAIN,
        key=KEY.hex(),
        sink=SINK_DC,
        sink_port=dcs[SINK_DC],
        source=SOURCE_DC,
        source_port=dcs[SOURCE_DC],
    )
    config.write_text(text)
    command = [sys.executable, "-m", "kopir.cli", "relay", "serve", "-c", str(config)]
    if loop == "asyncio":
        command.append("--no-uvloop")
    errors = work / f"relay-{loop}.stderr"
    with errors.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    try:
        yield RelayProcess(proc, await _listening_port(proc, loop))
    finally:
        await _stop(proc)
        _report_stderr(errors, proc.returncode)


async def _listening_port(proc: asyncio.subprocess.Process, loop: str) -> int:
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode(errors="replace")
    except TimeoutError:
        raise BenchError("the relay printed nothing for 30 s after starting") from None
    match = LISTENING.match(line)
    if not match:
        raise BenchError(f"the relay did not start; its first line was {line.strip()!r}")
    if match[2] != loop:
        raise BenchError(f"asked for the {loop} loop, the relay runs {match[2]}")
    return int(match[1])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            print("relay_bench: the relay ignored SIGTERM for 20 s; killed", file=sys.stderr)
            proc.kill()
            await proc.wait()


def _report_stderr(path: Path, returncode: int | None) -> None:
    text = path.read_text(errors="replace").strip()
    if text:
        more = f"\n[... {len(text) - 3000} more characters]" if len(text) > 3000 else ""
        print(f"relay_bench: the relay wrote to stderr:\n{text[:3000]}{more}", file=sys.stderr)
    if returncode not in (0, None):
        print(f"relay_bench: the relay exited with code {returncode}", file=sys.stderr)


@dataclass
class Rig:
    relay: RelayProcess
    sink: FakeDC
    source: FakeDC


@contextlib.asynccontextmanager
async def rig(loop: str, work: Path) -> AsyncIterator[Rig]:
    """A relay process on ``loop`` with a sink DC and a source DC; all stopped on exit."""
    async with FakeDC("sink") as sink, FakeDC("source") as source:
        unpaced_server(sink.server)
        unpaced_server(source.server)
        dcs = {SINK_DC: sink.port, SOURCE_DC: source.port}
        async with relay_process(loop, dcs, work) as relay:
            yield Rig(relay, sink, source)


# -- clients ------------------------------------------------------------------------------


async def bounded(task: Awaitable[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(task, timeout)
    except TimeoutError:
        raise BenchError(f"stalled: {what} not done after {timeout:.0f} s") from None


async def wait_until(
    condition: Callable[[], bool], describe: Callable[[], str], timeout: float
) -> None:
    """Poll ``condition``; on timeout raise with ``describe()`` (what was reached by then)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"stalled: {describe()} after {timeout:.0f} s")
        await asyncio.sleep(0.01)


async def connect_into(clients: list[TlsClient], rig: Rig, count: int, dc: int) -> None:
    """Open ``count`` fake-TLS connections to ``dc``, appending each to ``clients`` at once
    (so the caller can close them even if a later one fails), and wait for the DC links."""
    dc_server = rig.sink if dc == SINK_DC else rig.source
    want = dc_server.connections + count
    for start in range(0, count, CONNECT_BATCH):
        batch = (
            asyncio.wait_for(_client(rig.relay.port, dc), 30)
            for _ in range(min(CONNECT_BATCH, count - start))
        )
        results = await asyncio.gather(*batch, return_exceptions=True)
        clients.extend(r for r in results if isinstance(r, TlsClient))
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BenchError(f"{len(failed)} fake-TLS connections failed: {failed[0]!r}")
    await wait_until(
        lambda: dc_server.connections >= want,
        lambda: f"{dc_server.connections} of {want} DC links from the relay",
        30,
    )


async def _client(port: int, dc: int) -> TlsClient:
    return await TlsClient.connect(HOST, port, KEY, DOMAIN, dc, sock=await dialled(port))


async def all_closed(rig: Rig) -> None:
    """Wait for the relay to close its DC links once the clients have gone (else it leaks)."""
    await wait_until(
        lambda: rig.sink.active == rig.source.active == 0,
        lambda: (
            f"{rig.sink.active + rig.source.active} DC links still open after the clients closed"
        ),
        30,
    )


async def close_all(clients: list[TlsClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    clients.clear()


async def tls_handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and complete the fake-TLS handshake, sending nothing more."""
    reader, writer = await asyncio.open_connection(sock=await dialled(port))
    try:
        hello = client_hello(KEY, DOMAIN)
        writer.write(hello)
        check_server_hello(KEY, hello, await asyncio.wait_for(read_server_hello(reader), 30))
    except BaseException:
        writer.close()
        raise
    return reader, writer


def send_header(writer: asyncio.StreamWriter, dc: int) -> None:
    """What `TlsClient.connect` sends after the handshake: CCS and the obfuscated2 header."""
    header, _, _ = obfs2.client_header(KEY, obfs2.PADDED, dc)
    writer.write(faketls.CCS_RECORD + faketls.wrap(header))


def transfer_timeout(total: int) -> float:
    return 60 + total / (5 * 1024 * 1024)


# -- measurements -------------------------------------------------------------------------


def crypto_floor(total: int) -> float:
    """CPU seconds per GiB of one AES-256-CTR pass in 64 KiB chunks, in this process."""
    context = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    chunk, count = os.urandom(CHUNK), max(1, total // CHUNK)
    start = time.process_time()
    for _ in range(count):
        context.update(chunk)
    return (time.process_time() - start) / (count * CHUNK / GIB)


FORWARDER = """
import os, socket, sys
sys.path.insert(0, sys.argv[3])
from relay import faketls
from relay.keystream import Keystream
from relay.tuning import tune_aes, tune_allocator

tune_allocator()  # as kopir relay serve does
tune_aes()
work = sys.argv[2]
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
source, _ = listener.accept()
sink = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf = bytearray(256 * 1024)  # as large as the relay's own receive buffer
view = memoryview(buf)
out = memoryview(bytearray(len(buf) + 32 * 1024))
keys = [Keystream(os.urandom(32), os.urandom(16)) for _ in range(2)]
records = faketls.RecordReader()
if work == "splice":  # download with no copies: payloads spliced, record headers sent
    import fcntl
    pipe_out, pipe_in = os.pipe()
    fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, 1 << 20)
    while n := os.splice(source.fileno(), pipe_in, 1 << 20):
        for start in range(0, n, faketls.MAX_RECORD_PAYLOAD):
            size = min(n - start, faketls.MAX_RECORD_PAYLOAD)
            sink.sendall(faketls.APPDATA_PREFIX + size.to_bytes(2, "big"), socket.MSG_MORE)
            while size:
                size -= os.splice(pipe_out, sink.fileno(), size, flags=os.SPLICE_F_MORE)
else:
    while n := source.recv_into(buf):
        if work == "upload":  # TLS records in; their payload decrypted and encrypted again
            parts = records.payloads(view[:n])
            size = keys[0].update_into(b"".join(parts), out)
            keys[1].update_into(out[:size], out)
            sink.sendall(out[:size])
        elif work == "download":  # wrapped in TLS records on the way out
            parts = faketls.wrap_parts(view[:n])
            sent, total = sink.sendmsg(parts), sum(map(len, parts))
            if sent < total:
                sink.sendall(b"".join(parts)[sent:])
        else:
            sink.sendall(view[:n])
sink.close()
input()
"""


async def forwarder_floor(total: int, work: str) -> float:
    """CPU seconds per GiB of a minimal forwarder process moving ``total`` bytes, doing
    ``work`` on them: ``plain``, ``upload``, ``download`` or ``splice`` (see ``FORWARDER``)."""
    unit = UPLOAD_MESSAGE if work == "upload" else CHUNK  # as the relay gets them
    moved = max(1, total // unit) * unit
    got, done = 0, asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal got
        while data := await reader.read(256 * 1024):
            got += len(data)
        writer.close()
        done.set()

    server = unpaced_server(await asyncio.start_server(sink, HOST, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FORWARDER, str(server.sockets[0].getsockname()[1]), work,
        str(ROOT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line.strip().isdigit():
            raise BenchError(f"the {work} forwarder did not start (it printed {line!r})")
        forwarder = RelayProcess(proc, int(line))
        _, writer = await asyncio.open_connection(sock=await dialled(forwarder.port))
        chunk = os.urandom(unit)
        if work == "upload":
            chunk = faketls.wrap(chunk, CLIENT_RECORD)
        start = await forwarder.settled()
        await bounded(
            _push(writer, chunk, moved // unit),
            transfer_timeout(moved), f"the {work} forwarder's source",
        )  # fmt: skip
        writer.close()
        await bounded(done.wait(), transfer_timeout(moved), f"the {work} forwarder")
        used = await forwarder.settled() - start
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        server.close()
    if got != moved and not (work in ("download", "splice") and got > moved):
        raise BenchError(f"the {work} forwarder passed {got} of {moved} bytes")
    return used.total * GIB / moved


async def upload(rig: Rig, sizes: Sizes) -> tuple[Usage, int]:
    """Relay CPU time and bytes sent client → DC."""
    messages = max(1, sizes.total // sizes.clients // UPLOAD_MESSAGE)
    moved = messages * UPLOAD_MESSAGE * sizes.clients
    records = faketls.wrap(os.urandom(UPLOAD_MESSAGE), CLIENT_RECORD)
    clients: list[TlsClient] = []
    try:
        await connect_into(clients, rig, sizes.clients, SINK_DC)
        base, start = rig.sink.bytes_in, await rig.relay.settled()
        pushes = asyncio.gather(*(_push(c.writer, records, messages) for c in clients))
        await bounded(pushes, transfer_timeout(moved), f"{sizes.clients} clients' upload")
        await wait_until(
            lambda: rig.sink.bytes_in - base >= moved,
            lambda: f"the sink DC got {rig.sink.bytes_in - base} of {moved} bytes",
            transfer_timeout(moved),
        )
        used = await rig.relay.settled() - start
        if rig.sink.bytes_in - base != moved:
            raise BenchError(f"the sink DC got {rig.sink.bytes_in - base} bytes, not {moved}")
    finally:
        await close_all(clients)
    await all_closed(rig)
    return used, moved


async def _push(writer: asyncio.StreamWriter, data: bytes, count: int) -> None:
    for _ in range(count):
        writer.write(data)
        await writer.drain()


async def download(rig: Rig, sizes: Sizes) -> tuple[Usage, int]:
    """Relay CPU time and bytes sent DC → client."""
    each = max(1, sizes.total // sizes.clients // CHUNK) * CHUNK
    rig.source.source_bytes = each
    links: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(sizes.clients):
            links.append(await tls_handshake(rig.relay.port))
        start = await rig.relay.settled()
        for _, writer in links:
            send_header(writer, SOURCE_DC)
        reads = asyncio.gather(*(_count_to_eof(reader) for reader, _ in links))
        got = await bounded(reads, transfer_timeout(each * sizes.clients), "download")
        used = await rig.relay.settled() - start
    finally:
        for _, writer in links:
            writer.close()
    if min(got) < each:  # each client gets the payload plus 5-byte record headers
        raise BenchError(f"a client got {min(got)} bytes before EOF, not at least {each}")
    await all_closed(rig)
    return used, each * sizes.clients


async def _count_to_eof(reader: asyncio.StreamReader) -> int:
    count = 0
    while data := await reader.read(256 * 1024):
        count += len(data)
    return count


async def handshakes(rig: Rig, sizes: Sizes) -> float:
    """Fake-TLS handshakes per relay CPU second; clients close after the server's records,
    so the relay never dials a DC."""
    shares = [sizes.handshakes // sizes.parallel] * sizes.parallel
    shares[0] += sizes.handshakes % sizes.parallel
    start = await rig.relay.settled()
    workers = asyncio.gather(*(_handshake_worker(rig.relay.port, n) for n in shares))
    await bounded(workers, 60 + sizes.handshakes * 0.05, f"{sizes.handshakes} handshakes")
    spent = (await rig.relay.settled() - start).total
    return ratio(sizes.handshakes, spent)


async def _handshake_worker(port: int, count: int) -> None:
    for _ in range(count):
        _, writer = await tls_handshake(port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def idle(rig: Rig, sizes: Sizes) -> tuple[int, float]:
    """(connections reached, RSS bytes per idle connection from the least-squares slope)."""
    counts, rss = [], []
    clients: list[TlsClient] = []
    try:
        for step in range(sizes.idle_steps + 1):
            target = sizes.idle * step // sizes.idle_steps
            await connect_into(clients, rig, target - len(clients), SINK_DC)
            await rig.relay.settled()
            counts.append(len(clients))
            rss.append(rig.relay.rss())
    finally:
        await close_all(clients)
    await all_closed(rig)
    return counts[-1], statistics.linear_regression(counts, rss).slope


# -- the run ------------------------------------------------------------------------------


def ratio(part: float, whole: float) -> float:
    """``part / whole``, or NaN (printed ``nan``, left out of medians) when ``whole`` is 0: CPU
    time from ``/proc`` comes in clock ticks (10 ms), and ``--quick`` runs may see none."""
    return part / whole if whole else math.nan


async def one_round(loop: str, sizes: Sizes, work: Path, out: Samples) -> None:
    """Every figure once, against a fresh relay on ``loop``; appends to ``out``."""
    async with rig(loop, work) as r:
        for direction, transfer in (("upload", upload), ("download", download)):
            floor = crypto_floor(sizes.total)
            used, moved = await transfer(r, sizes)
            per_gib = GIB / moved
            out["crypto_floor_cpu_s_per_gib"].append(floor)
            out[f"{direction}_cpu_s_per_gib"].append(used.total * per_gib)
            out[f"{direction}_floor_ratio"].append(ratio(used.total * per_gib, floor))
            sockets = await forwarder_floor(sizes.total, "plain")
            out[f"{direction}_socket_floor_cpu_s_per_gib"].append(sockets)
            out[f"{direction}_socket_ratio"].append(ratio(used.total * per_gib, sockets))
            out["socket_floor_crypto_ratio"].append(ratio(sockets, floor))
            needed = await forwarder_floor(sizes.total, direction)
            out[f"{direction}_work_floor_cpu_s_per_gib"].append(needed)
            out[f"{direction}_work_floor_crypto_ratio"].append(ratio(needed, floor))
            out[f"{direction}_work_ratio"].append(ratio(used.total * per_gib, needed))
            out[f"{direction}_user_cpu_s_per_gib"].append(used.user * per_gib)
            out[f"{direction}_system_cpu_s_per_gib"].append(used.system * per_gib)
            out[f"{direction}_page_faults_per_gib"].append(used.faults * per_gib)
            if direction == "download":
                spliced = await forwarder_floor(sizes.total, "splice")
                out["download_splice_floor_cpu_s_per_gib"].append(spliced)
                out["download_splice_floor_crypto_ratio"].append(ratio(spliced, floor))
        out["handshakes_per_cpu_s"].append(await handshakes(r, sizes))
        reached, slope = await idle(r, sizes)
        out["idle_connections"].append(reached)
        out["rss_bytes_per_idle_connection"].append(slope)
    latest = ", ".join(f"{name} {FIGURES[name].format(v[-1])}" for name, v in out.items())
    print(f"relay_bench: {loop}: {latest}", file=sys.stderr)


FIGURES = {
    "crypto_floor_cpu_s_per_gib": "{:.3f}",
    "upload_cpu_s_per_gib": "{:.3f}",
    "upload_floor_ratio": "{:.2f}",
    "download_cpu_s_per_gib": "{:.3f}",
    "download_floor_ratio": "{:.2f}",
    "upload_socket_floor_cpu_s_per_gib": "{:.3f}",
    "upload_socket_ratio": "{:.2f}",
    "download_socket_floor_cpu_s_per_gib": "{:.3f}",
    "download_socket_ratio": "{:.2f}",
    "socket_floor_crypto_ratio": "{:.2f}",
    "upload_work_floor_cpu_s_per_gib": "{:.3f}",
    "upload_work_floor_crypto_ratio": "{:.2f}",
    "upload_work_ratio": "{:.2f}",
    "download_work_floor_cpu_s_per_gib": "{:.3f}",
    "download_work_floor_crypto_ratio": "{:.2f}",
    "download_work_ratio": "{:.2f}",
    "download_splice_floor_cpu_s_per_gib": "{:.3f}",
    "download_splice_floor_crypto_ratio": "{:.2f}",
    "handshakes_per_cpu_s": "{:.0f}",
    "idle_connections": "{:.0f}",
    "rss_bytes_per_idle_connection": "{:.0f}",
    "upload_user_cpu_s_per_gib": "{:.3f}",
    "upload_system_cpu_s_per_gib": "{:.3f}",
    "download_user_cpu_s_per_gib": "{:.3f}",
    "download_system_cpu_s_per_gib": "{:.3f}",
    "upload_page_faults_per_gib": "{:.0f}",
    "download_page_faults_per_gib": "{:.0f}",
}


async def run(loops: list[str], sizes: Sizes, rounds: int) -> tuple[dict[str, Samples], list[str]]:
    """Samples per loop, and the loops dropped because their relay failed (told on stderr)."""
    samples: dict[str, Samples] = {loop: {name: [] for name in FIGURES} for loop in loops}
    failed: list[str] = []
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM unwinds like Ctrl-C does, so the relay is stopped and the peers closed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as work:
        for number in range(rounds):
            for loop in [loop for loop in loops if loop not in failed]:  # A B A B
                print(f"relay_bench: round {number + 1}/{rounds}, {loop}", file=sys.stderr)
                try:
                    await one_round(loop, sizes, Path(work), samples[loop])
                except (BenchError, OSError, asyncio.IncompleteReadError, BadServerHello) as exc:
                    print(
                        f"relay_bench: {loop} failed, no {loop} figures: {exc!r}", file=sys.stderr
                    )
                    failed.append(loop)
    return samples, failed


def raise_fd_limit(connections: int) -> int:
    """Raise RLIMIT_NOFILE so that ``connections`` idle connections fit (the relay inherits
    it): two descriptors each, here and in the relay. The hard limit is raised too when the
    bench may (root); otherwise the soft one goes up to the hard one. Returns how many fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * connections + FD_SPARE
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # not allowed: keep the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            hard = wanted
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fit = min(connections, (hard - FD_SPARE) // 2)
    if fit < connections:
        print(
            f"relay_bench: the open-file limit ({hard}) fits {fit} idle connections, not "
            f"{connections}; raise it (ulimit -Hn) for the full figure",
            file=sys.stderr,
        )
    return fit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--no-uvloop", action="store_true", help="measure asyncio's loop only")
    parser.add_argument("--mib", type=int, help="MiB per transfer (512; quick 32)")
    parser.add_argument("--clients", type=int, default=8, help="parallel transfer clients")
    parser.add_argument("--handshakes", type=int, help="handshakes per round (2000; quick 300)")
    parser.add_argument("--parallel", type=int, default=8, help="handshakes in flight")
    parser.add_argument("--idle", type=int, help="idle connections (10000; quick 1000)")
    parser.add_argument("--idle-steps", type=int, default=6, help="RSS readings after 0")
    parser.add_argument("--rounds", type=int, help="rounds per loop (3; quick 2)")
    parser.add_argument(
        "--peer-congestion", default=PEER_CONGESTION, metavar="NAME",
        help=f"TCP congestion control of the fake clients and DCs ({PEER_CONGESTION}); "
        "'system' leaves the system's default",
    )  # fmt: skip
    return parser.parse_args()


def system_congestion() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    return "unknown"


def set_peer_congestion(name: str) -> None:
    """Use ``name`` for this process's sockets ("system": leave them be); exits if refused."""
    global _peer_congestion
    _peer_congestion = None if name == "system" else name.encode()
    try:
        with socket.socket() as probe:
            unpaced(probe)
    except OSError as exc:
        sys.exit(
            f"relay_bench: cannot use TCP congestion control {name!r} ({exc.strerror}); "
            "see /proc/sys/net/ipv4/tcp_allowed_congestion_control, or pass "
            "--peer-congestion system"
        )


def main() -> None:
    args = parse_args()
    set_peer_congestion(args.peer_congestion)
    quick = args.quick
    sizes = Sizes(
        total=(args.mib or (32 if quick else 512)) * 1024 * 1024,
        clients=args.clients,
        handshakes=args.handshakes or (300 if quick else 2000),
        parallel=args.parallel,
        idle=raise_fd_limit(args.idle or (1000 if quick else 10_000)),
        idle_steps=args.idle_steps,
    )
    rounds = args.rounds or (2 if quick else 3)
    loops = ["asyncio"]
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

            loops.append("uvloop")
    started = time.monotonic()
    try:
        samples, failed = asyncio.run(run(loops, sizes, rounds))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("relay_bench: interrupted; the relay was stopped")
    print(f"rounds: {rounds}")
    print(f"clients: {sizes.clients}")
    print(f"bytes_per_transfer: {sizes.total}")
    print(f"handshakes: {sizes.handshakes}")
    print(f"client_record_bytes: {CLIENT_RECORD}")
    print(f"peer_congestion: {args.peer_congestion}")
    print(f"system_congestion: {system_congestion()}")
    speedup = gcm_speedup()
    print(f"aes_gcm_speedup: {speedup:.2f}")
    print(f"bulk_keystream: {'gcm' if speedup >= GCM_PAYS else 'ctr'}")
    for loop in (loop for loop in loops if loop not in failed):
        prefix = "" if loop == "asyncio" else f"{loop}_"
        for name, form in FIGURES.items():
            values = [v for v in samples[loop][name] if not math.isnan(v)] or [math.nan]
            value = min(values) if name == "idle_connections" else statistics.median(values)
            print(f"{prefix}{name}: {form.format(value)}")
    print(f"bench_wall_s: {time.monotonic() - started:.0f}")
    if failed:
        sys.exit(f"relay_bench: no figures for {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
