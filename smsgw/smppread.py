"""smpplib's SMPP client with our own reads: buffered, bounded, never blocking the I/O thread.

Theory of operation
-------------------
smpplib's own ``read_pdu`` blocks until a whole PDU is in, and believes its ``command_length``
(SMPP 3.4 §3.2) up to 4 GiB. The SMPP backend's I/O thread (``smsgw.smpp``) must never block in a
read, so ``Client`` reads its own way:

- ``fill``: one ``recv`` of what is waiting per wake-up, into a buffer. Half a PDU and then
  silence never blocks the thread;
- ``next_pdu``: the buffer's first PDU once it is whole, else ``None``. A ``command_length``
  outside 16 to 64 KiB (``smppwire.command_length_problem``) is refused as soon as its 4 octets
  are in, and whatever smpplib's parser raises on a malformed PDU (``struct.error``,
  ``KeyError``, ...) becomes ``MalformedPdu``, whose message never quotes the PDU's fields;
- ``read_pdu``: the blocking read smpplib's bind uses, made of the two, reading nothing past the
  PDU's end. It ends by ``answer_by`` (a ``time.monotonic`` deadline) as a whole, not per
  ``recv``: an SMSC dripping its bind_resp a byte at a time is ``SlowAnswer``, not a bind that
  never ends.

What a broken read means (the link dropped, and after how long for half a PDU) is decided in
``smsgw.smpp``. After each read it calls ``ack_now``, so the SMSC is not held up by our delayed ACK.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import smpplib.client  # type: ignore[import-untyped]
import smpplib.consts  # type: ignore[import-untyped]
import smpplib.exceptions  # type: ignore[import-untyped]
import smpplib.smpp  # type: ignore[import-untyped]

from smsgw.smppwire import command_length_problem

__all__ = ["QUICKACK", "Client", "MalformedPdu", "SlowAnswer", "ack_now"]

QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class MalformedPdu(Exception):
    """The SMSC sent bytes that are not a PDU we can read: the link is broken."""


class SlowAnswer(Exception):
    """The SMSC's answer was not whole by ``Client.answer_by``."""


class Client(smpplib.client.Client):  # type: ignore[misc]
    """smpplib's client, reading our way: into a buffer, a PDU parsed once it is whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = bytearray()
        """Read, not yet parsed: part of one PDU, plus at most one ``fill``."""
        self.answer_by: float | None = None
        """When ``read_pdu`` gives up (``time.monotonic``); None: ``timeout`` per ``recv``."""

    def read_pdu(self) -> Any:
        """The next PDU, blocking (``_bind``'s read), and reading nothing past its end."""
        try:
            while (pdu := self.next_pdu()) is None:
                have = len(self.buffer)
                if self.answer_by is not None:
                    left = self.answer_by - time.monotonic()
                    if left <= 0:
                        raise SlowAnswer
                    self._socket.settimeout(left)
                try:
                    self.fill(
                        4 - have if have < 4 else int.from_bytes(self.buffer[:4], "big") - have
                    )
                except TimeoutError:
                    if self.answer_by is None:
                        raise
                    raise SlowAnswer from None
        finally:
            if self.answer_by is not None and self._socket is not None:
                self._socket.settimeout(self.timeout)
        return pdu

    def fill(self, size: int = 65536) -> None:
        """One recv: on a readable socket it never blocks; otherwise up to the timeout."""
        data = self._socket.recv(size)
        if not data:
            raise smpplib.exceptions.ConnectionError("the SMSC closed the connection")
        self.buffer += data

    def next_pdu(self) -> Any:
        """The buffer's first PDU once whole, else None; ``MalformedPdu`` for garbage."""
        if len(self.buffer) < 4:
            return None
        length = int.from_bytes(self.buffer[:4], "big")
        problem = command_length_problem(length)
        if problem:  # as soon as the 4 octets are in: smpplib would wait for up to 4 GiB
            raise MalformedPdu(problem)
        if len(self.buffer) < length:
            return None
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        return self._parse(data)

    def _parse(self, data: bytes) -> Any:
        try:
            pdu = smpplib.smpp.parse_pdu(
                data, client=self, allow_unknown_opt_params=self.allow_unknown_opt_params
            )
            if pdu is None:  # smpplib's "no command", which its own read_pdu would trip on
                raise ValueError("no command")
        except Exception as exc:  # what the parser raises is not ours to list: all is garbage
            command = int.from_bytes(data[4:8], "big")
            raise MalformedPdu(
                f"command_id 0x{command:08X} of {len(data)} octets does not parse"
                f" ({type(exc).__name__})"  # not str(exc): it may quote the PDU's fields
            ) from None
        if not pdu.is_error() and pdu.command in smpplib.consts.STATE_SETTERS:
            self.state = smpplib.consts.STATE_SETTERS[pdu.command]  # as smpplib's own does
        return pdu


def ack_now(sock: socket.socket) -> None:
    """ACK what we read at once instead of after the delayed-ACK timer (Linux: TCP_QUICKACK).

    An SMSC that leaves Nagle on holds each response until its previous one is ACKed. When we
    have no submit to send (the end of a worker's batch) our ACK waits for the delayed-ACK
    timer, ~40 ms, and so does every response behind it: against Net::SMPP's SMSC that cut the
    rate from ~2,600 to ~840 messages/s. Linux clears the flag as it sees fit, so it is set
    again after every read.
    """
    if QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
