"""The prober's asyncio adapter: dial each port of a relay and run a :class:`ProbeClient` over it.

Theory of operation
-------------------
For every port a relay lists (main port first) the adapter opens one TCP connection, records the
connect time as the RTT, writes what the sans-IO core asks for and feeds it what the relay
sends, until the core reports the last stage passed or raises. Each stage (``connect``,
``tls-hmac`` for ``ee``, ``dc``) has its own timeout, so a relay that accepts and then says
nothing fails at the stage it stalled in. Network errors become short ``detail`` labels
(``refused``, ``timeout``, ``closed``, ``reset``, ...), never exceptions: a probe always
returns a :class:`ProbeResult`.

Ports of one relay are tried one after the other and every connection is closed before the
next opens, so :func:`probe_relays` with ``concurrency=N`` never has more than N open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable, Sequence

from proxylist.errors import ProbeError, ProxylistError
from proxylist.model import PortResult, ProbeResult, Relay, Stage, StageResult
from proxylist.probe import NeedData, ProbeClient

READ_SIZE = 65536
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def _detail(exc: BaseException) -> str:
    """The short label a failed stage records for a network error."""
    if isinstance(exc, ProbeError):
        return exc.detail
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable"
    return f"error: {exc}"


async def _stage(probe: ProbeClient, reader: asyncio.StreamReader) -> bytes:
    """Read until the current stage passes; return the bytes it says to send next."""
    while isinstance(event := probe.next_event(), NeedData):
        probe.receive_data(await reader.read(READ_SIZE))
    return event.send


async def _run_stages(
    probe: ProbeClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
) -> list[StageResult]:
    """Every stage after ``connect``, stopping at the first failure."""
    clock = asyncio.get_running_loop().time
    results: list[StageResult] = []
    writer.write(probe.initial)
    for stage in probe.stages:
        started = clock()
        try:
            async with asyncio.timeout(timeout):
                await writer.drain()
                writer.write(await _stage(probe, reader))
        except (ProbeError, OSError, TimeoutError) as exc:
            results.append(_result(stage, started, clock(), _detail(exc)))
            break
        results.append(_result(stage, started, clock()))
    return results


def _result(stage: Stage, started: float, ended: float, failure: str = "") -> StageResult:
    return StageResult(stage, not failure, failure, (ended - started) * 1000)


async def probe_port(
    relay: Relay, port: int, *, timeout: float, now: Callable[[], float] = time.time
) -> PortResult:
    """Probe ``relay`` on one ``port``; every stage gets ``timeout`` seconds."""
    clock = asyncio.get_running_loop().time
    started = clock()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(relay.server, port)
    except (OSError, TimeoutError) as exc:
        return PortResult(port, (_result("connect", started, clock(), _detail(exc)),))
    connected = _result("connect", started, clock())
    try:
        stages = await _run_stages(ProbeClient(relay, now=now()), reader, writer, timeout)
    finally:
        writer.transport.abort()  # a probe has nothing left to say: no lingering close
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return PortResult(port, (connected, *stages), rtt_ms=connected.elapsed_ms)


async def probe_relay(
    relay: Relay, *, timeout: float, now: Callable[[], float] = time.time
) -> ProbeResult:
    """Probe every port ``relay`` lists, one after the other; never raises for network trouble."""
    _check_timeout(timeout)
    ports = [await probe_port(relay, port, timeout=timeout, now=now) for port in relay.ports]
    return ProbeResult(relay, tuple(ports), at=now())


async def probe_relays(
    relays: Sequence[Relay],
    *,
    timeout: float,
    concurrency: int,
    now: Callable[[], float] = time.time,
) -> list[ProbeResult]:
    """Probe ``relays`` with at most ``concurrency`` connections open; results in input order."""
    _check_timeout(timeout)
    if concurrency < 1:
        raise ProxylistError(
            f"probe concurrency must be at least 1, got {concurrency}: set a positive number"
        )
    gate = asyncio.Semaphore(concurrency)

    async def one(relay: Relay) -> ProbeResult:
        async with gate:
            return await probe_relay(relay, timeout=timeout, now=now)

    return list(await asyncio.gather(*(one(relay) for relay in relays)))


def _check_timeout(timeout: float) -> None:
    if not timeout > 0:
        raise ProxylistError(f"probe timeout must be above 0 seconds, got {timeout}")
