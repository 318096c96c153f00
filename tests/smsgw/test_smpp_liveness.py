"""smsgw.smpp against an SMSC whose links look alive and are not: backoff, and half a PDU.

- An SMSC that accepts every bind and then breaks the link (garbage, an unbind, a close).
  Before, a good bind reset the backoff, so we reconnected every ``reconnect_min`` forever (a
  storm providers ban for); now the backoff goes back to ``reconnect_min`` only once the SMSC
  has answered a request of ours.
- An SMSC that sends part of a PDU and goes silent. Before, the I/O thread sat in smpplib's
  blocking read for the rest of it for ``timeout`` seconds: nothing was written, and ``stop()``
  waited; now partial PDUs are buffered and the thread carries on.
- An SMSC that drips its bind_transceiver_resp a byte at a time. Before, each ``recv`` had
  ``timeout`` seconds, so the bind (and ``start``) lasted as long as the SMSC liked; now the
  whole answer must be in within ``timeout``.

The server side's accept times are what we measure. Timing asserts are lower bounds (a reconnect
can come late, never early), or bounds with a margin of many times what they should take.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import pytest

from smsgw.smpp import SmppBackend, SmppError
from tests.smsgw.smsc import Pdu, cstr
from tests.smsgw.test_smpp import Events, send_until_accepted, singles, until
from tests.smsgw.test_smpp import settings as smpp_settings
from tests.smsgw.test_smpp_malformed import INBOUND, RawSmsc, raw

GARBAGE = bytes.fromhex("00000000")  # command_length 0
DELIVER = raw("deliver_sm", INBOUND)
HALF = DELIVER[: len(DELIVER) // 2]  # the header and part of the body


class SendsAfterBind(RawSmsc):
    """Answers every bind, then writes ``after_bind`` (while it is set); notes its accepts."""

    def __init__(self, after_bind: bytes | None) -> None:
        super().__init__()
        self.after_bind = after_bind
        """Written after the bind_transceiver_resp; b"" closes the connection instead."""
        self.accepted: list[float] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(asyncio.get_running_loop().time())
        await super()._serve(reader, writer)

    def _handle(self, connection: int, pdu: Pdu, writer: asyncio.StreamWriter) -> bool:
        keep = super()._handle(connection, pdu, writer)
        if keep and pdu.command == "bind_transceiver" and self.after_bind is not None:
            writer.write(self.after_bind)
            return self.after_bind != b""
        return keep


@contextlib.asynccontextmanager
async def running(
    smsc: RawSmsc, events: Events | None = None, **overrides: object
) -> AsyncIterator[SmppBackend]:
    """A started backend on ``smsc``, stopped (and its thread gone) on the way out."""
    backend, events = SmppBackend(smpp_settings(smsc.port, **overrides)), events or Events()
    await backend.start(events.on_receipt, events.on_inbound)
    try:
        yield backend
    finally:
        await asyncio.wait_for(backend.stop(), 30.0)
        await smsc.close()
    assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]


BREAKS = {"garbage": GARBAGE, "unbind": raw("unbind"), "close": b""}


@pytest.mark.asyncio
@pytest.mark.parametrize("after_bind", BREAKS.values(), ids=BREAKS.keys())
async def test_an_smsc_that_breaks_every_fresh_link_is_retried_ever_more_slowly(
    after_bind: bytes,
) -> None:
    low, high = 0.025, 0.8
    smsc = SendsAfterBind(after_bind)
    await smsc.start()
    async with running(smsc, reconnect_min=low, reconnect_max=high) as backend:
        await until(lambda: len(smsc.accepted) >= 7, timeout=30.0)  # ~1.6 s of backoff
        gaps = [b - a for a, b in zip(smsc.accepted, smsc.accepted[1:7], strict=False)]
        # Each drop at least doubles the wait, up to reconnect_max. (Before: every gap was
        # reconnect_min plus a few ms.)
        least = [min(high, low * 2**k) for k in range(len(gaps))]
        assert all(gap >= 0.9 * want for gap, want in zip(gaps, least, strict=True)), gaps
        # A healthy link (the SMSC answered a submit_sm) brings the backoff back down.
        smsc.after_bind = None
        await until(lambda: len(smsc.binds) == len(smsc.accepted) == 8, timeout=10.0)
        await send_until_accepted(backend, singles(1))
        smsc.after_bind = after_bind
        dropped_at = asyncio.get_running_loop().time()
        await smsc.send_raw(after_bind, close=after_bind == b"")
        await until(lambda: len(smsc.accepted) == 9, timeout=10.0)
        assert smsc.accepted[8] - dropped_at < high / 2  # reconnect_min, not reconnect_max


@pytest.mark.asyncio
async def test_a_healthy_link_the_smsc_unbinds_is_reconnected_after_reconnect_min() -> None:
    low = 0.2
    smsc = RawSmsc()
    await smsc.start()
    async with running(smsc, reconnect_min=low, reconnect_max=30.0) as backend:
        for links in range(1, 6):  # were the backoff to double, the fifth wait would be 3.2 s
            await send_until_accepted(backend, singles(1))
            unbound_at = asyncio.get_running_loop().time()
            await smsc.unbind()
            await until(lambda n=links: len(smsc.binds) == n + 1, timeout=10.0)
            assert asyncio.get_running_loop().time() - unbound_at < 8 * low


@pytest.mark.asyncio
async def test_half_a_pdu_does_not_stall_the_link() -> None:
    smsc = RawSmsc()
    await smsc.start()
    async with running(smsc, timeout=1.5) as backend:
        smsc.script.response_delay = 30.0  # keep what we submit in flight
        first = asyncio.create_task(backend.send(singles(1)))
        await until(lambda: len(smsc.submits) == 1)
        await smsc.send_raw(HALF)  # ... and nothing more: the connection stays open
        await asyncio.sleep(0.2)  # the backend has read the half by now
        second = asyncio.create_task(backend.send(singles(1, first_id=2)))
        results = await asyncio.wait_for(asyncio.gather(first, second), 15.0)
        # The second message was written on the stalled link (before, the I/O thread was
        # stuck in a read until the link dropped, and it came back unsent).
        assert [s.connection for s in smsc.submits] == [1, 1]
        assert [r.status for rs in results for r in rs] == ["retry", "retry"]
        assert all("link dropped" in str(r.error) for rs in results for r in rs)
        smsc.script.response_delay = 0.0
        await until(lambda: len(smsc.binds) == 2)  # reconnected on its own
        await send_until_accepted(backend, singles(1, first_id=3))


@pytest.mark.asyncio
async def test_half_a_pdu_alone_drops_the_link_after_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    smsc = RawSmsc()
    await smsc.start()
    async with running(smsc, timeout=0.5) as backend:  # enquire_link stays at 30 s
        await smsc.send_raw(HALF)
        await until(lambda: len(smsc.binds) == 2)
        assert "dropped: a PDU left unfinished for 0.5 s" in caplog.text
        await send_until_accepted(backend, singles(1))


@pytest.mark.asyncio
async def test_stop_is_not_held_up_by_half_a_pdu() -> None:
    smsc = RawSmsc()
    await smsc.start()
    timeout, grace = 10.0, 0.2
    backend = SmppBackend(smpp_settings(smsc.port, timeout=timeout, stop_grace=grace))
    await backend.start(Events().on_receipt, Events().on_inbound)
    try:
        smsc.script.response_delay = 30.0
        sending = asyncio.create_task(backend.send(singles(1)))
        await until(lambda: len(smsc.submits) == 1)
        await smsc.send_raw(HALF)
        await asyncio.sleep(0.2)
        # stop's bound is stop_grace for responses plus min(timeout, 2 s) for unbind_resp;
        # before, it also waited out the blocked read: the whole 10 s timeout.
        await asyncio.wait_for(backend.stop(), grace + 2.0 + 2.0)
        [result] = await asyncio.wait_for(sending, 1.0)
        assert result.status == "retry"
        assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]
    finally:
        await asyncio.wait_for(backend.stop(), 2 * timeout)  # a no-op once stopped
        await smsc.close()


@pytest.mark.asyncio
async def test_a_pdu_in_pieces_is_read_whole() -> None:
    smsc, events = RawSmsc(), Events()
    await smsc.start()
    async with running(smsc, events, timeout=2.0) as backend:
        for cut in (2, 4, 9, 16, len(DELIVER) - 1):  # inside and at the edges of the header
            await smsc.send_raw(DELIVER[:cut])
            await asyncio.sleep(0.05)
            await smsc.send_raw(DELIVER[cut:])
        await smsc.send_raw(DELIVER * 2 + DELIVER[:9])  # two whole, and the head of a third
        await asyncio.sleep(0.05)
        await smsc.send_raw(DELIVER[9:])
        await until(lambda: len(events.inbound) == 8)
        assert {m.text for m in events.inbound} == {"STOP"}
        assert len(smsc.binds) == 1  # never dropped
        await send_until_accepted(backend, singles(1))


@pytest.mark.asyncio
async def test_a_pdu_right_behind_the_bind_resp_is_read() -> None:
    smsc, events = SendsAfterBind(DELIVER), Events()  # one write: the bind's read takes no more
    await smsc.start()
    async with running(smsc, events):
        await until(lambda: len(events.inbound) == 1)
        assert len(smsc.binds) == 1


class DripsBindResp:
    """Reads a bind, then writes a valid bind_transceiver_resp one byte per ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.written = 0
        """How many bytes of the answer went out before the backend hung up."""
        self.answer = raw("bind_transceiver_resp", cstr("SLOW"))
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await reader.read(1024)  # the bind
            for byte in self.answer:
                writer.write(bytes((byte,)))
                await writer.drain()
                self.written += 1
                await asyncio.sleep(self.every)
        except ConnectionError:
            pass  # the backend hung up
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


@pytest.mark.asyncio
async def test_a_bind_resp_dripped_a_byte_at_a_time_fails_the_bind_after_timeout() -> None:
    smsc = DripsBindResp(every=0.25)  # each byte well within the timeout; the whole, not
    port = await smsc.start()
    backend = SmppBackend(smpp_settings(port, timeout=1.0))
    try:
        with pytest.raises(SmppError, match="did not answer our bind within 1 s"):
            await asyncio.wait_for(backend.start(Events().on_receipt, Events().on_inbound), 30)
        # Gone with 4 or 5 of its 25 bytes written; before, the bind read all 25 (6 s) and
        # succeeded.
        assert 0 < smsc.written < len(smsc.answer)
        assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]
    finally:
        await asyncio.wait_for(backend.stop(), 10)  # a no-op unless the bind succeeded
        await smsc.close()
