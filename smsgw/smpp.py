"""The SMPP 3.4 backend: smpplib driven by one I/O thread, behind ``smsgw.backend.Backend``.

Theory of operation
-------------------
smpplib is blocking and not thread-safe (PROTOCOLS.md "smpplib 2.2.4"), so one I/O thread owns
the socket and the smpplib client (``smppread.Client``). The asyncio side never touches either:
``send`` puts ``(OutgoingSms, future)`` pairs on a ``queue.Queue`` and wakes the thread through
a socketpair; the thread resolves the futures, and schedules the receipt and inbound callbacks,
with ``loop.call_soon_threadsafe``: one call per wake-up carrying everything since the last, in
order (a receipt never overtakes its submit's result). The thread's loop is: take commands,
check timers, write as many ``submit_sm`` as the window and the token bucket allow (in one
send, encoded by ``smppwire.SubmitSm``), then ``select`` on the SMSC socket and the wake-up
socket until the next deadline. After each read we ask for an immediate ACK
(``smppread.ack_now``).

We do what smpplib leaves out:

- a send window: at most ``window`` submits without a ``submit_sm_resp``, tracked by sequence;
- a throughput limit: a token bucket (``TokenBucket``, sans-IO, time passed in);
- enquire_link when the SMSC has been silent for ``enquire_link`` seconds (smpplib only sends
  one when a read times out, and we never block in a read);
- our own PDU dispatch: smpplib's ``read_once`` leaves an SMSC's ``unbind`` unanswered, and
  raises on error statuses. We answer ``deliver_sm`` (status 0, always, even for text we cannot
  read, or the SMSC would redeliver it forever), ``enquire_link`` and ``unbind``, and
  ``generic_nack`` any other request;
- our own reads, buffered and bounded (``smsgw.smppread``). Half a PDU not finished within
  ``timeout``, garbage (``MalformedPdu``), or a PDU we cannot handle is a broken link like any
  other: one warning, the link dropped, reconnected with backoff; it never ends the thread;
- reconnection with exponential backoff, ``reconnect_min`` doubling up to ``reconnect_max``.
  A good bind does not reset it (an SMSC that binds us and then breaks the link would have us
  reconnect every ``reconnect_min``, which providers ban for); an answer to a request of ours
  (``submit_sm_resp``, ``generic_nack``, ``enquire_link_resp``) does. An ``unbind`` from the
  SMSC on such a proven link is reconnected after ``reconnect_min``. Whatever was queued or in
  flight when the link drops comes back as ``retry``: the backend never re-sends on its own, so
  the queue stays the one place that decides (at-least-once, DESIGN.md §6 smsgw).

Submit statuses (SMPP 3.4 §5.1.3): 0 is ``accepted`` with the normalised message id; 0x58
ESME_RTHROTTLED and 0x14 ESME_RMSGQFUL are ``retry`` after ``retry_delay``; anything else is
``failed``. A ``deliver_sm`` with ``esm_class & 0x04`` is a delivery receipt (SMPP 3.4 appendix
B text, or the ``receipted_message_id``/``message_state`` TLVs); any other is an inbound SMS.
Those decisions, and the token bucket, are sans-IO and live in ``smsgw.smppwire``.

Phone numbers never reach a log line: we log ``OutgoingSms.ref[:12]``, and smpplib's own logger
(whose debug lines dump whole PDUs) is held at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import smpplib.exceptions  # type: ignore[import-untyped]
import smpplib.smpp  # type: ignore[import-untyped]

from smsgw.backend import Inbound, InboundHandler, OutgoingSms, ReceiptHandler, SendResult
from smsgw.smppread import Client, MalformedPdu, SlowAnswer, ack_now
from smsgw.smppwire import (
    ESM_RECEIPT,
    RINVCMDID,
    SmppError,
    SmppSettings,
    TokenBucket,
    bind_error,
    decode_short_message,
    e164_sender,
    receipt_from_fields,
    submit_result,
    submit_sm_for,
)

__all__ = ["SmppBackend", "SmppError", "SmppSettings"]  # the latter two from smsgw.smppwire

log = logging.getLogger(__name__)

_LINK_ERRORS = (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError)
_READ_ERRORS = (*_LINK_ERRORS, smpplib.exceptions.UnknownCommandError, ValueError)


@dataclass
class _Flight:
    sms: OutgoingSms
    future: asyncio.Future[SendResult]
    sent_at: float = 0.0


@dataclass
class _Stop:
    future: asyncio.Future[None]


_Command = list[_Flight] | _Stop


class _Link:
    """The I/O thread: owns the smpplib client, the window, the bucket and the timers."""

    def __init__(
        self, settings: SmppSettings, loop: asyncio.AbstractEventLoop,
        on_receipt: ReceiptHandler, on_inbound: InboundHandler, clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.s, self.loop, self.clock = settings, loop, clock
        self.on_receipt, self.on_inbound = on_receipt, on_inbound
        self.commands: queue.Queue[_Command] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.client: Any = None
        self.pending: deque[_Flight] = deque()
        self.inflight: dict[int, _Flight] = {}
        self.bucket = TokenBucket(settings.throughput, clock())
        self.backoff = settings.reconnect_min
        self.proven = False
        """The SMSC has answered a request of ours on this link (``_proved``)."""
        self.next_connect = 0.0
        self.heard_at = self.enquired_at = self.partial_at = 0.0
        self.stop: _Stop | None = None
        self.stop_at = 0.0
        self.unbound = self.closed = False
        self._lock = threading.Lock()
        self._outbox: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    # -- the asyncio side calls these two, from the event loop's thread --

    def put(self, command: _Command) -> None:
        with self._lock:
            if not self.closed:
                self.commands.put(command)
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"\0")
                return
        _refuse(command)  # the thread has ended: answer at once

    def close_wakeup(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    # -- everything below runs in the I/O thread --

    def run(self, ready: asyncio.Future[None]) -> None:
        try:
            self.client = self._open()
        except SmppError as exc:
            self._call(_fail, ready, exc)
            self._close()
            return
        self.heard_at = self.clock()
        self._call(_settle, ready, None)
        try:
            self._serve()
        except Exception:  # a bug: say so, and never leave a caller waiting
            log.exception("the SMPP I/O thread failed")
            self._drop("I/O thread failure", self.clock())
        self._close()

    def _close(self) -> None:
        """Refuse further commands, and answer those that came in while we were stopping."""
        with self._lock:
            self.closed = True
        while not self.commands.empty():
            self._call(_refuse, self.commands.get_nowait())
        if self.stop:
            self._call(_settle, self.stop.future, None)
        self._flush()

    def _serve(self) -> None:
        while True:
            self._take_commands()
            now = self.clock()
            if self.stop and (not self.inflight or self.client is None or now >= self.stop_at):
                self._shutdown()
                return
            if self.client is None and not self.stop and now >= self.next_connect:
                self._reconnect(now)
            if self.client is not None:
                self._check_timers(now)
            if self.client is not None:
                self._pump(now)
            self._wait(self._next_deadline(self.clock()))

    def _take_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            if isinstance(command, _Stop):
                self.stop, self.stop_at = command, self.clock() + self.s.stop_grace
                self._retry_all(self.pending, "backend stopping", 0.0)
                self.pending.clear()
            elif self.client is None or self.stop:
                self._retry_all(command, "SMSC not connected", self._connect_delay())
            else:
                self.pending.extend(command)

    def _connect_delay(self) -> float:
        return max(self.s.reconnect_min, self.next_connect - self.clock())

    def _open(self) -> Any:
        """Connect and bind_transceiver; raises ``SmppError`` with what to do."""
        name = "smsgw.smpp.smpplib"
        logging.getLogger(name).setLevel(logging.ERROR)  # its debug lines dump numbers
        s = self.s
        client = Client(
            s.host, s.port, timeout=s.timeout, logger_name=name, allow_unknown_opt_params=True
        )
        try:
            client.connect()
            # smpplib leaves Nagle on: a window of small submits would then wait for the
            # SMSC's delayed ACK (tens of ms) after the first one.
            client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.answer_by = time.monotonic() + s.timeout  # the whole answer, not each recv
            client.bind_transceiver(
                system_id=s.system_id, password=s.password, system_type=s.system_type
            )
        except smpplib.exceptions.PDUError as exc:
            client.disconnect()
            raise bind_error(s, exc) from None
        except SlowAnswer:
            client.disconnect()
            raise SmppError(
                f"the SMSC at {s.host}:{s.port} did not answer our bind within {s.timeout:g} s"
            ) from None
        except MalformedPdu as exc:
            client.disconnect()
            raise SmppError(
                f"the SMSC at {s.host}:{s.port} answered our bind with a malformed PDU ({exc})"
            ) from None
        except _READ_ERRORS as exc:
            client.disconnect()
            raise SmppError(f"cannot reach the SMSC at {s.host}:{s.port} ({exc!r})") from None
        log.info("bound to the SMSC at %s:%s as %s", s.host, s.port, s.system_id)
        return client

    def _reconnect(self, now: float) -> None:
        try:
            self.client = self._open()
        except SmppError as exc:
            log.warning("%s; next attempt in %.1f s", exc, self.backoff)
            self.next_connect = now + self.backoff
            self.backoff = min(self.s.reconnect_max, self.backoff * 2)
            return
        self.heard_at = self.clock()  # the backoff stays until the link proves itself

    def _check_timers(self, now: float) -> None:
        oldest = min((f.sent_at for f in self.inflight.values()), default=now)
        if now - oldest > self.s.timeout:
            self._drop(f"no submit_sm_resp in {self.s.timeout:g} s", now)
        elif self.enquired_at and now - self.enquired_at > self.s.timeout:
            self._drop(f"no enquire_link_resp in {self.s.timeout:g} s", now)
        elif self.partial_at and now - self.partial_at > self.s.timeout:
            self._drop(f"a PDU left unfinished for {self.s.timeout:g} s", now)
        elif not self.enquired_at and now - self.heard_at >= self.s.enquire_link:
            self.enquired_at = now  # reset by _drop if the write fails
            self._write("enquire_link", now)

    def _pump(self, now: float) -> None:
        """Write as many submit_sm as the window and the bucket allow, in one send."""
        batch: dict[int, _Flight] = {}
        pdus: list[bytes] = []
        while self.pending and len(self.inflight) + len(batch) < self.s.window and not self.stop:
            if self.bucket.delay(now) > 0:
                break
            self.bucket.take(now)
            flight = self.pending.popleft()
            submit = submit_sm_for(flight.sms, self.s)
            if isinstance(submit, str):
                log.warning("not sent to ref=%s: %s", flight.sms.ref[:12], submit)
                self._settle(flight, SendResult(flight.sms.message_id, "failed", error=submit))
                continue
            sequence = self.client.next_sequence()
            batch[sequence] = flight
            pdus.append(submit.encode(sequence))
        if batch:
            self._send_submits(batch, b"".join(pdus), now)

    def _send_submits(self, batch: dict[int, _Flight], data: bytes, now: float) -> None:
        try:
            self.client._socket.sendall(data)
        except _LINK_ERRORS as exc:
            self.pending.extendleft(reversed(batch.values()))  # maybe half-written: retry them
            self._drop(f"write failed ({exc!r})", now)
            return
        for flight in batch.values():
            flight.sent_at = now
        self.inflight.update(batch)

    def _next_deadline(self, now: float) -> float:
        deadlines = [now + 1.0]
        if self.client is None:
            deadlines.append(self.next_connect)
        elif self.pending and len(self.inflight) < self.s.window:
            deadlines.append(now + self.bucket.delay(now))
        if self.client is not None:
            deadlines.append(self.enquired_at + self.s.timeout if self.enquired_at else
                             self.heard_at + self.s.enquire_link)  # fmt: skip
        if self.inflight:
            deadlines.append(min(f.sent_at for f in self.inflight.values()) + self.s.timeout)
        if self.partial_at:
            deadlines.append(self.partial_at + self.s.timeout)
        if self.stop:
            deadlines.append(self.stop_at)
        return max(0.0, min(deadlines) - now)

    def _wait(self, timeout: float) -> None:
        self._flush()
        sockets: list[Any] = [self._wake_r]
        if self.client is not None:
            sockets.append(self.client._socket)
        readable, _, _ = select.select(sockets, [], [], timeout)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        if self.client is not None and self.client._socket in readable:
            self._read_ready()
            if self.client is not None:
                ack_now(self.client._socket)

    def _read_ready(self) -> None:
        """One read (so sends are not starved), then every whole PDU it completed is handled.

        Anything wrong drops the link, nothing escapes. What is left of a PDU stays buffered:
        if the rest has not come within ``timeout``, ``_check_timers`` drops the link.
        """
        now = self.clock()
        try:
            self.client.fill()
        except _LINK_ERRORS as exc:
            self._drop(f"read failed ({exc!r})", now)
            return
        while self.client is not None and not self.unbound:
            try:
                pdu = self.client.next_pdu()
            except MalformedPdu as exc:
                self._drop(f"malformed PDU from the SMSC: {exc}", now)
                return
            if pdu is None:
                break
            self.partial_at = 0.0
            try:
                self._on_pdu(pdu, now)
            except Exception as exc:  # a field we cannot use: the type only, as it may quote it
                self._drop(f"cannot handle a {pdu.command} ({type(exc).__name__})", now)
        if self.client is not None and self.client.buffer:
            self.partial_at = self.partial_at or now

    def _on_pdu(self, pdu: Any, now: float) -> None:
        self.heard_at = now
        command = pdu.command
        if command in ("submit_sm_resp", "generic_nack"):
            self._on_submit_resp(pdu)
        elif command == "deliver_sm":
            self._on_deliver(pdu, now)
        elif command == "enquire_link":
            self._write("enquire_link_resp", now, sequence=pdu.sequence)
        elif command == "enquire_link_resp":
            self.enquired_at = 0.0
            self._proved()
        elif command == "unbind":
            self._write("unbind_resp", now, sequence=pdu.sequence)
            self._drop("the SMSC unbound", now, backoff=False)
        elif command == "unbind_resp" and self.stop:
            self.unbound = True
        elif command == "unbind_resp":  # smpplib now counts us unbound, and we never asked
            self._drop("an unbind_resp we did not ask for", now)
        elif pdu.is_request():
            self._write("generic_nack", now, sequence=pdu.sequence, status=RINVCMDID)

    def _on_submit_resp(self, pdu: Any) -> None:
        flight = self.inflight.pop(pdu.sequence, None)
        if flight is None:
            log.warning("%s for unknown sequence %d", pdu.command, pdu.sequence)
            return
        self._proved()
        provider_id = _text(getattr(pdu, "message_id", None))
        status = pdu.status if pdu.status or pdu.command == "submit_sm_resp" else 0xFF
        result = submit_result(flight.sms.message_id, status, provider_id, self.s.retry_delay)
        if result.status == "failed":
            log.warning("ref=%s refused: %s", flight.sms.ref[:12], result.error)
        self._settle(flight, result)

    def _on_deliver(self, pdu: Any, now: float) -> None:
        self._write("deliver_sm_resp", now, sequence=pdu.sequence)
        short_message = pdu.short_message or getattr(pdu, "message_payload", None) or b""
        if (pdu.esm_class or 0) & ESM_RECEIPT:
            receipted = _text(getattr(pdu, "receipted_message_id", None)) or None
            state = getattr(pdu, "message_state", None)
            receipt = receipt_from_fields(
                short_message, receipted, state, decimal=self.s.receipt_ids_decimal
            )
            if receipt is not None:
                self._call(_emit, self.on_receipt, receipt)
            return
        text = decode_short_message(
            short_message, pdu.data_coding or 0, pdu.esm_class or 0, self.s.data_coding_gsm7
        )
        sender = e164_sender(_text(pdu.source_addr), pdu.source_addr_ton or 0)
        self._call(_emit, self.on_inbound, Inbound(sender, text))

    def _write(
        self, command: str, now: float, sequence: int | None = None, status: int = 0
    ) -> bool:
        try:
            pdu = smpplib.smpp.make_pdu(command, client=self.client, status=status)
            if sequence is not None:  # make_pdu ignores a sequence= argument
                pdu.sequence = sequence
            self.client.send_pdu(pdu)
        except _LINK_ERRORS as exc:
            self._drop(f"cannot send {command} ({exc!r})", now)
            return False
        return True

    def _proved(self) -> None:
        """The SMSC answered a request of ours: the link works, the backoff starts over."""
        self.proven, self.backoff = True, self.s.reconnect_min

    def _drop(self, reason: str, now: float, *, backoff: bool = True) -> None:
        """Close the link; everything queued or in flight goes back as retry.

        We wait ``self.backoff`` (reconnect_min if the link had proven itself), then double it,
        unless ``backoff=False`` (a clean end, the SMSC unbound) ends a link that had proven
        itself. A link that never did is a failed attempt, however it ends.
        """
        delay = self.backoff
        if backoff or not self.proven:
            self.backoff = min(self.s.reconnect_max, self.backoff * 2)
        if self.client is not None:
            log.warning("SMPP link to %s:%s dropped: %s; next attempt in %.1f s",
                        self.s.host, self.s.port, reason, delay)  # fmt: skip
            with contextlib.suppress(*_LINK_ERRORS):
                self.client.disconnect()
        self.client, self.proven, self.enquired_at, self.partial_at = None, False, 0.0, 0.0
        self.next_connect = now + delay
        self._retry_all([*self.inflight.values(), *self.pending], f"link dropped: {reason}", delay)
        self.inflight.clear()
        self.pending.clear()

    def _shutdown(self) -> None:
        """stop(): unbind cleanly, then give back whatever is still in flight."""
        if self.client is not None and self._write("unbind", self.clock()):
            deadline = self.clock() + min(self.s.timeout, 2.0)
            while self.client is not None and not self.unbound and self.clock() < deadline:
                self._wait(deadline - self.clock())
        if self.client is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                self.client.disconnect()
            self.client = None
        self._retry_all([*self.inflight.values(), *self.pending], "backend stopped", 0.0)
        self.inflight.clear()

    def _retry_all(self, flights: Sequence[_Flight], reason: str, after: float) -> None:
        for flight in flights:
            result = SendResult(flight.sms.message_id, "retry", error=reason, retry_after=after)
            self._settle(flight, result)

    def _settle(self, flight: _Flight, result: SendResult) -> None:
        self._call(_settle, flight.future, result)

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func(*args)`` on the event loop, in order, at the next ``_flush``."""
        self._outbox.append((func, args))

    def _flush(self) -> None:
        """Hand the loop everything ``_call`` gathered, in one wake-up (not one per message)."""
        if self._outbox:
            calls, self._outbox = self._outbox, []
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self.loop.call_soon_threadsafe(_run_all, calls)


def _text(value: object) -> str:
    """smpplib gives C-octet strings as bytes."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _refuse(command: _Command) -> None:
    """Answer a command the I/O thread will never see (it has ended)."""
    if isinstance(command, _Stop):
        _settle(command.future, None)
        return
    for flight in command:
        result = SendResult(flight.sms.message_id, "retry", error="backend stopped")
        _settle(flight.future, result)


def _run_all(calls: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    for func, args in calls:
        func(*args)


def _emit(handler: Callable[[Any], None], event: object) -> None:
    try:
        handler(event)
    except Exception:
        log.exception("the %s handler failed", type(event).__name__)


class SmppBackend:
    """``smsgw.backend.Backend`` over SMPP 3.4 (bind_transceiver)."""

    name = "smpp"

    def __init__(self, settings: SmppSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._link: _Link | None = None
        self._thread: threading.Thread | None = None

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        """Connect and bind; raises ``SmppError`` if the SMSC is unreachable or refuses us."""
        if self._link is not None:
            raise SmppError("the SMPP backend is already started")
        loop = asyncio.get_running_loop()
        link = _Link(self.settings, loop, on_receipt, on_inbound, self._clock)
        ready: asyncio.Future[None] = loop.create_future()
        thread = threading.Thread(target=link.run, args=(ready,), name="smsgw-smpp", daemon=True)
        thread.start()
        try:
            await ready
        except BaseException:
            thread.join()
            link.close_wakeup()
            raise
        self._link, self._thread = link, thread

    async def send(self, batch: Sequence[OutgoingSms]) -> list[SendResult]:
        """Submit every message; one result per message (accepted, retry or failed)."""
        if self._link is None:
            raise SmppError("the SMPP backend is not started")
        loop = asyncio.get_running_loop()
        flights = [_Flight(sms, loop.create_future()) for sms in batch]
        if flights:
            self._link.put(flights)
        return list(await asyncio.gather(*(f.future for f in flights)))

    async def stop(self) -> None:
        """Wait (up to ``stop_grace``) for in-flight responses, unbind and disconnect."""
        link, thread = self._link, self._thread
        if link is None or thread is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.put(_Stop(done))
        await done
        await asyncio.to_thread(thread.join, self.settings.timeout)
        link.close_wakeup()
        self._link = self._thread = None
