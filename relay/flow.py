"""Moving bytes between the two sockets of a relayed connection, cheaply.

``relay.server`` decides what a connection is (handshake, relay or mask); the two protocol
objects of a relayed connection share this module's ``Side``, which reads into one buffer
that all connections share and writes the other way with ``send``.

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
  (twice as fast with VAES; ``relay.keystream``, measured once by ``Relay.start``).
  Reading with ``recvmsg_into`` into a header area and a payload area, so that the kernel
  lays the payloads end to end, was tried and measured: with tdlib's 2,878-byte records
  the copy into 183 segments per read cost the kernel as much as the join saved (user time
  -0.06, system time +0.07 CPU-s/GiB), for a descriptor more per client;
* asyncio's own loop reads a socket once per wake-up, so on it a relaying side reads up to
  ``MORE_READS`` more times itself (``os.readv`` into the same buffer) while its socket has
  bytes and the other side takes them, as libuv (uvloop) does anyway: fewer trips through
  the loop (``bench/relay_bench.py``: about 5% less CPU per GiB both ways). An error or the
  end of the stream is left to asyncio's own next read, except that a read error aborts;
* ``send`` hands the result (for ``ee`` download: record headers and views of the payload)
  to the socket in one ``writev`` while the transport has nothing queued, and copies only
  what the socket did not take into the transport, which then owns it. So a view of a shared
  buffer never outlives its callback, whatever the transport does with what it is given;
* the write-buffer limits are zero: a side stops reading as soon as the other side's
  transport holds anything, so at most the unsent rest of one read waits in user space per
  direction, and the kernel's socket buffers do the rest of the queueing;
* after a write that the socket cut short, a side's reads fit the room left in the other
  side's socket (``Side.throttled``, ``send_room``: its send buffer less what it still
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
import socket
import sys
import termios
from typing import cast

from relay import faketls

log = logging.getLogger("kopir.relay")

HIGH_WATER = 0
LOW_WATER = 0
# Shared by all connections (the loop runs one callback at a time). AES-CTR's update_into
# wants 15 spare bytes past the output; a read plus one pending record (up to a whole
# ClientHello) always fits in the scratch buffer.
RECEIVE = memoryview(bytearray(256 * 1024))
SCRATCH = memoryview(
    bytearray(len(RECEIVE) + faketls.RECORD_HEADER + faketls.MAX_RECORD_PAYLOAD + 512)
)
MIN_READ = faketls.MAX_RECORD_PAYLOAD
MORE_READS = 8
"""Reads a relaying side makes itself after each read of asyncio's loop, while its socket
has more: asyncio's loop reads once per wake-up (see above). Nine reads (2.25 MiB) take
about a millisecond, so other connections wait no longer than that."""


class Side(asyncio.BufferedProtocol):
    """What both sides of a relayed connection share: the transport with zero write-buffer
    limits, its socket descriptor for ``send``, and reads into the shared buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.throttled = False
        self.more_reads = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike: cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.fd = fileno(transport)
        if self.fd >= 0 and isinstance(asyncio.get_running_loop(), asyncio.SelectorEventLoop):
            self.more_reads = MORE_READS  # libuv (uvloop) already reads until the socket is dry

    def buffer_updated(self, nbytes: int) -> None:
        with RECEIVE[:nbytes] as view:
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
            with RECEIVE[:nbytes] as view:
                self.received(view)

    def received(self, view: memoryview) -> None:
        """Handle bytes this side read into the shared buffer (``view`` dies on return)."""
        raise NotImplementedError

    def relaying(self) -> bool:
        """Whether reads may be repeated without the loop (see ``MORE_READS``)."""
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self.throttled:
            return RECEIVE
        other = self.other()
        room = send_room(other.transport, other.fd) if other else len(RECEIVE)
        if room >= len(RECEIVE):
            self.throttled = False
            return RECEIVE
        return RECEIVE[: max(MIN_READ, room)]

    def other(self) -> Side | None:
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


def fileno(transport: asyncio.BaseTransport) -> int:
    """The transport's socket descriptor, or -1 (then ``send`` always goes through it)."""
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (AttributeError, OSError, ValueError):
        return -1


def send_room(transport: asyncio.Transport | None, fd: int) -> int:
    """About how many more bytes the socket under ``transport`` takes now: its send buffer
    less the bytes it still holds. A whole receive buffer's worth where that is unknown."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or fd < 0:
        return len(RECEIVE)
    try:
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        held = fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(4))  # SIOCOUTQ, on a socket
    except (OSError, AttributeError, ValueError):
        return len(RECEIVE)
    return int(size) - int.from_bytes(held, sys.byteorder, signed=True)


def send(transport: asyncio.Transport, fd: int, parts: list[bytes | memoryview]) -> int | None:
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


__all__ = ["HIGH_WATER", "MORE_READS", "RECEIVE", "SCRATCH", "Side", "send"]
