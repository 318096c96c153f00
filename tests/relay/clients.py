"""Real MTProxy clients, written by others, driven through a proxy for the relay's tests.

The peers (DESIGN.md §9) are Telethon's MTProxy connection classes and the
``telethonfaketls`` add-on, used as bare connection objects (no ``TelegramClient``, no
account, no network beyond 127.0.0.1):

- ``classic``: ``ConnectionTcpMTProxyAbridged`` (obfuscated2, tag ``ef``);
- ``intermediate``: ``ConnectionTcpMTProxyIntermediate`` (obfuscated2, tag ``ee``);
- ``dd``: ``ConnectionTcpMTProxyRandomizedIntermediate`` (padded intermediate, tag ``dd``);
- ``faketls``: ``TelethonFakeTLS.ConnectionTcpMTProxyFakeTLS`` (``ee`` secret; padded
  intermediate inside fake TLS).

Every helper takes the secret as the proxy link shows it, in hex: 32 digits (classic),
``dd`` + 32, or ``ee`` + 32 + the domain in hex. Each client gets it in the form its source
needs (see `telethon_secret`), whatever kind is asked for, so tests can also offer a secret
to the wrong kind of client on purpose.

Quirks worth knowing, all read from the installed sources:

- Telethon's MTProxy ``connect()`` waits up to 2 s after sending its header, to see whether
  the proxy hangs up; a proxy that closes then makes it raise ``ConnectionError``. Run
  several clients concurrently rather than one after another. The fake-TLS class skips it.
- Telethon's AES-CTR is pure-Python ``pyaes`` (about 0.25 MB/s here). `fast_telethon_aes`
  swaps in the same cipher from ``cryptography`` for bulk tests; `Ctr` is shown to match
  ``pyaes`` byte for byte in ``test_harness.py``.
- ``telethonfaketls`` keeps its ClientHello in a dict shared by every instance, so two
  handshakes at once would check each other's session id; `connect` serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from telethon.network import MTProtoPlainSender
from telethon.network.connection import (
    ConnectionTcpMTProxyAbridged,
    ConnectionTcpMTProxyIntermediate,
    ConnectionTcpMTProxyRandomizedIntermediate,
    tcpmtproxy,
)
from telethon.network.connection.connection import Connection
from telethon.tl.functions import ReqPqMultiRequest
from telethon.tl.types import ResPQ
from TelethonFakeTLS import ConnectionTcpMTProxyFakeTLS  # type: ignore[import-untyped]

from tests.relay.fakedc import Ctr

Kind = Literal["classic", "intermediate", "dd", "faketls"]
KINDS: tuple[Kind, ...] = ("classic", "intermediate", "dd", "faketls")

_CLASSES: dict[Kind, type[Connection]] = {
    "classic": ConnectionTcpMTProxyAbridged,
    "intermediate": ConnectionTcpMTProxyIntermediate,
    "dd": ConnectionTcpMTProxyRandomizedIntermediate,
    "faketls": ConnectionTcpMTProxyFakeTLS,
}

_FAKETLS_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class ProbeFailed(AssertionError):
    """The proxy answered a ``req_pq_multi`` with something other than the matching ``resPQ``."""


@dataclass(frozen=True)
class Secret:
    key: bytes
    domain: bytes
    """The fake-TLS domain; empty for classic and ``dd`` secrets."""

    @classmethod
    def parse(cls, secret_hex: str) -> Secret:
        raw = bytes.fromhex(secret_hex)
        if len(raw) == 16:
            return cls(raw, b"")
        if len(raw) == 17 and raw[0] == 0xDD:
            return cls(raw[1:], b"")
        if len(raw) > 17 and raw[0] == 0xEE:
            return cls(raw[1:17], raw[17:])
        raise ValueError(f"not a proxy secret (32 hex digits, dd+32 or ee+32+domain): {secret_hex}")


class _Loggers(dict[str, logging.Logger]):
    """What Telethon's ``loggers=`` argument must be: module name -> logger, made on demand."""

    def __missing__(self, name: str) -> logging.Logger:
        self[name] = logging.getLogger(name)
        return self[name]


def telethon_secret(kind: Kind, secret_hex: str) -> str:
    """The ``proxy[2]`` string each client class needs for this secret.

    Telethon strips a leading ``dd``/``ee`` from the string, then keeps 16 bytes, so a bare key
    that itself starts with byte dd or ee would lose a byte; ``dd`` + key is always right.
    ``telethonfaketls`` wants the ``ee`` secret *without* its ``ee`` (it prepends one itself),
    and then hands the key to Telethon bare, so such keys cannot work with it at all.
    """
    secret = Secret.parse(secret_hex)
    if kind != "faketls":
        return "dd" + secret.key.hex()
    if not secret.domain:
        raise ValueError(f"the faketls client needs an ee secret with a domain, not {secret_hex}")
    if secret.key[0] in (0xDD, 0xEE):
        raise ValueError(
            f"telethonfaketls cannot use a key starting with byte {secret.key[0]:02x}: Telethon "
            "strips it as a secret prefix; generate test keys without it"
        )
    return (secret.key + secret.domain).hex()


def open_connection(
    kind: Kind, host: str, port: int, secret_hex: str, *, dc_id: int = 2
) -> Connection:
    """An unconnected client of ``kind`` aimed at the proxy ``host:port`` for DC ``dc_id``.

    The ip/port arguments of Telethon's classes are ignored when a proxy is given (it dials
    the proxy); ``dc_id`` goes into the obfuscated2 header unchanged, as a signed int16.
    """
    cls: Any = _CLASSES[kind]
    proxy = (host, port, telethon_secret(kind, secret_hex))
    conn: Connection = cls("127.0.0.1", 443, dc_id, loggers=_Loggers(), proxy=proxy)
    return conn


async def connect(
    kind: Kind, host: str, port: int, secret_hex: str, *, dc_id: int = 2
) -> Connection:
    """A connected client; on failure its socket is closed and the error re-raised.

    (Telethon's own ``disconnect()`` does nothing before ``connect()`` succeeded, which would
    leak the socket.)
    """
    conn = open_connection(kind, host, port, secret_hex, dc_id=dc_id)
    try:
        if kind == "faketls":
            async with _faketls_lock():
                await conn.connect()
        else:
            await conn.connect()
    except BaseException:
        await _close(conn)
        raise
    return conn


async def roundtrip(
    kind: Kind,
    proxy_host: str,
    proxy_port: int,
    secret_hex: str,
    payloads: Sequence[bytes],
    *,
    dc_id: int = 2,
    timeout: float = 15.0,
) -> list[bytes]:
    """Send each payload as one transport frame; return the frames that came back, in order.

    Sending and receiving run concurrently, so a large batch cannot deadlock on Telethon's
    one-slot queues. Payloads must be non-empty whole words: Telethon's abridged codec drops
    the last ``len % 4`` bytes from the length, and its ``recv()`` skips empty frames.
    """
    for payload in payloads:
        if not payload or len(payload) % 4:
            raise ValueError(f"payloads must be non-empty multiples of 4 bytes, not {len(payload)}")
    async with asyncio.timeout(timeout):
        conn = await connect(kind, proxy_host, proxy_port, secret_hex, dc_id=dc_id)
        sender = asyncio.create_task(_send_all(conn, payloads))
        try:
            replies = [await conn.recv() for _ in payloads]
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await conn.disconnect()
    return replies


async def probe(
    kind: Kind,
    proxy_host: str,
    proxy_port: int,
    secret_hex: str,
    *,
    dc_id: int = 2,
    timeout: float = 15.0,
) -> None:
    """The full-path probe with Telethon's own code: ``req_pq_multi`` out, ``resPQ`` back.

    Telethon's ``MTProtoPlainSender`` builds the message and parses the answer as a TL object.
    Raises `ProbeFailed` if the answer is not a ``resPQ`` echoing the nonce.
    """
    nonce = int.from_bytes(os.urandom(16), "little", signed=True)
    async with asyncio.timeout(timeout):
        conn = await connect(kind, proxy_host, proxy_port, secret_hex, dc_id=dc_id)
        try:
            sender = MTProtoPlainSender(conn, loggers=_Loggers())
            answer = await sender.send(ReqPqMultiRequest(nonce=nonce))
        finally:
            await conn.disconnect()
    if not isinstance(answer, ResPQ) or answer.nonce != nonce:
        raise ProbeFailed(f"req_pq_multi with nonce {nonce} was answered by {answer!r}")


class TelethonCtr:
    """Telethon's ``AESModeCTR`` interface over `Ctr` (encrypt and decrypt are the same)."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._ctr = Ctr(key, iv)

    def encrypt(self, data: bytes) -> bytes:
        return self._ctr.update(data)

    decrypt = encrypt


@contextlib.contextmanager
def fast_telethon_aes() -> Iterator[None]:
    """Within the block, Telethon's MTProxy classes (all four kinds) use `TelethonCtr`.

    Only the AES implementation changes; every byte on the wire is the same.
    """
    original = tcpmtproxy.AESModeCTR
    tcpmtproxy.AESModeCTR = TelethonCtr
    try:
        yield
    finally:
        tcpmtproxy.AESModeCTR = original


async def _send_all(conn: Connection, payloads: Sequence[bytes]) -> None:
    for payload in payloads:
        await conn.send(payload)


@contextlib.asynccontextmanager
async def _faketls_lock() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    lock = _FAKETLS_LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        yield


async def _close(conn: Connection) -> None:
    writer = conn._writer
    if writer is None:
        return
    writer.close()
    stream = getattr(writer, "upstream", writer)  # telethonfaketls wraps the StreamWriter
    with contextlib.suppress(Exception):
        await stream.wait_closed()
