"""smsgw.smpp against an SMSC that sends garbage after a good bind: a broken link, never a crash.

Whatever arrives (a PDU smpplib's parser chokes on, a ``command_length`` of 4 GiB, random
bytes), the backend drops the link with one warning, reconnects with its backoff, gives back
what was in flight as ``retry``, and accepts the next message. Before this, smpplib's
``struct.error``/``KeyError`` ended the I/O thread and every later send was "backend stopped".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smsgw.backend import Receipt
from smsgw.smpp import SmppBackend
from smsgw.smppwire import MAX_PDU_LENGTH
from tests.smsgw.smsc import (
    COMMANDS,
    HEADER,
    TLV_MESSAGE_STATE,
    TLV_RECEIPTED_MESSAGE_ID,
    ScriptedSmsc,
    Sm,
    cstr,
)
from tests.smsgw.test_smpp import Events, send_until_accepted, singles, until
from tests.smsgw.test_smpp import settings as smpp_settings

BIND_RECEIVER, TLV_DEST_ADDR_SUBUNIT, TLV_MESSAGE_PAYLOAD = 0x00000001, 0x0005, 0x0424


def raw(command: int | str, body: bytes = b"", length: int | None = None) -> bytes:
    """A PDU as the SMSC's bytes; ``length`` overrides the command_length it would have."""
    code = COMMANDS[command] if isinstance(command, str) else command
    return HEADER.pack(16 + len(body) if length is None else length, code, 0, 7) + body


BIND_BODY = cstr("sys") + cstr("pw") + cstr("") + bytes((0x34, 0, 0)) + cstr("")
MALFORMED = {
    "zero length": bytes.fromhex("00000000"),
    "length 8": bytes.fromhex("0000000800000001"),
    "short bind_receiver": raw(BIND_RECEIVER, bytes(8)),
    "bind_receiver, TLV 0x0005": raw(
        BIND_RECEIVER, BIND_BODY + struct.pack(">HH", TLV_DEST_ADDR_SUBUNIT, 1) + b"\1"
    ),
}
INBOUND = Sm(source_addr="77012345678", destination_addr="KOPIR", short_message=b"STOP").encode()
RECEIPT = Sm(
    source_addr="77012345678", esm_class=0x04,
    tlvs={TLV_RECEIPTED_MESSAGE_ID: cstr("1A2B01"), TLV_MESSAGE_STATE: bytes((2,))},
).encode()  # fmt: skip
VALID = [
    raw("enquire_link"), raw("deliver_sm", INBOUND), raw("deliver_sm", RECEIPT),
    raw("submit_sm_resp", cstr("1a2b01")), raw("generic_nack"), raw("unbind_resp"),
    raw("unbind"), raw(BIND_RECEIVER, BIND_BODY), raw("bind_transceiver_resp", cstr("X")),
]  # fmt: skip


class RawSmsc(ScriptedSmsc):
    """The scripted SMSC, also able to send bytes that are no PDU."""

    async def send_raw(self, data: bytes, *, close: bool = False) -> None:
        """Write ``data`` on the newest connection; ``close`` it after (the data goes first)."""
        writer = self._writer
        assert writer is not None, "no connection"
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()


@pytest_asyncio.fixture
async def smsc() -> AsyncIterator[RawSmsc]:
    server = RawSmsc()
    await server.start()
    yield server
    await server.close()  # its unmatched list is not checked: garbage answers nothing of ours


@pytest_asyncio.fixture
async def backend(smsc: RawSmsc) -> AsyncIterator[tuple[SmppBackend, Events]]:
    made, events = SmppBackend(smpp_settings(smsc.port)), Events()
    await made.start(events.on_receipt, events.on_inbound)
    yield made, events
    await made.stop()
    assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]


class Errors(logging.Handler):
    """Keeps ERROR records: "the SMPP I/O thread failed" is one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_records() -> Iterator[list[logging.LogRecord]]:
    """smsgw.smpp's ERROR records while the block runs."""
    handler, logger = Errors(), logging.getLogger("smsgw.smpp")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def thread_failures() -> Iterator[list[logging.LogRecord]]:
    with error_records() as records:
        yield records


def io_thread_alive() -> bool:
    return any(t.name == "smsgw-smpp" for t in threading.enumerate())


@pytest.mark.asyncio
@pytest.mark.parametrize("garbage", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_pdu_drops_the_link_and_in_flight_work_comes_back(
    smsc: RawSmsc, backend: tuple[SmppBackend, Events], garbage: bytes,
    caplog: pytest.LogCaptureFixture, thread_failures: list[logging.LogRecord],
) -> None:  # fmt: skip
    sender, _ = backend
    smsc.script.response_delay = 30.0  # keep three submits in flight
    sending = asyncio.create_task(sender.send(singles(3)))
    await until(lambda: len(smsc.submits) == 3)
    await smsc.send_raw(garbage)  # the connection stays open: the backend must end it
    results = await sending
    assert sorted(r.message_id for r in results) == [1, 2, 3]  # nothing lost
    assert {r.status for r in results} == {"retry"}
    assert all("link dropped: malformed PDU from the SMSC" in str(r.error) for r in results)
    smsc.script.response_delay = 0.0
    await until(lambda: len(smsc.binds) == 2)  # reconnected on its own
    await send_until_accepted(sender, singles(3))
    assert io_thread_alive() and thread_failures == []
    dropped = [r for r in caplog.records if "dropped: malformed PDU" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].levelno == logging.WARNING
    assert "77012345678" not in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("length", [MAX_PDU_LENGTH + 1, 0xFFFFFFFF])
async def test_an_oversized_command_length_drops_the_link_before_reading(
    smsc: RawSmsc, backend: tuple[SmppBackend, Events], length: int,
    caplog: pytest.LogCaptureFixture, thread_failures: list[logging.LogRecord],
) -> None:  # fmt: skip
    sender, _ = backend
    # Only the header: smpplib would wait the 5 s read timeout for the rest (and size a
    # buffer of length octets for it); we drop at once, long before the timeout.
    await smsc.send_raw(raw("deliver_sm", length=length))
    await until(lambda: len(smsc.binds) == 2, timeout=2.0)
    assert f"command_length {length} is not 16 to {MAX_PDU_LENGTH}" in caplog.text
    await send_until_accepted(sender, singles(1))
    assert io_thread_alive() and thread_failures == []


@pytest.mark.asyncio
async def test_a_pdu_of_the_largest_length_is_still_read(
    smsc: RawSmsc, backend: tuple[SmppBackend, Events]
) -> None:
    _, events = backend
    body = Sm(source_addr="77012345678", destination_addr="KOPIR").encode()
    payload = b"A" * (MAX_PDU_LENGTH - 16 - len(body) - 4)
    pdu = raw("deliver_sm", body + struct.pack(">HH", TLV_MESSAGE_PAYLOAD, len(payload)) + payload)
    assert len(pdu) == MAX_PDU_LENGTH
    await smsc.send_raw(pdu)
    await until(lambda: len(events.inbound) == 1)
    assert events.inbound[0].text == "A" * len(payload)
    assert len(smsc.binds) == 1


@pytest.mark.asyncio
async def test_a_receipt_id_of_non_ascii_digits_is_not_fatal(
    smsc: RawSmsc, thread_failures: list[logging.LogRecord]
) -> None:
    sender, events = SmppBackend(smpp_settings(smsc.port, receipt_ids_decimal=True)), Events()
    await sender.start(events.on_receipt, events.on_inbound)
    try:
        receipt = Sm(esm_class=0x04, tlvs={TLV_RECEIPTED_MESSAGE_ID: b"\xb2\0",  # '²'
                                           TLV_MESSAGE_STATE: bytes((2,))})  # fmt: skip
        await smsc.send_raw(raw("deliver_sm", receipt.encode()))
        await until(lambda: len(events.receipts) == 1)
        assert events.receipts == [Receipt("²", "delivered")]
        await send_until_accepted(sender, singles(1))
        assert len(smsc.binds) == 1 and thread_failures == []
    finally:
        await sender.stop()


@pytest.mark.asyncio
async def test_an_unbind_resp_we_did_not_ask_for_drops_the_link(
    smsc: RawSmsc, backend: tuple[SmppBackend, Events]
) -> None:
    sender, _ = backend
    await smsc.send_raw(raw("unbind_resp"))  # smpplib now counts the client unbound
    await until(lambda: len(smsc.binds) == 2)
    await send_until_accepted(sender, singles(1))


# -- fuzz ------------------------------------------------------------------------------------


@st.composite
def mutated_pdu(draw: st.DrawFn) -> bytes:
    """A valid PDU after 1-4 byte edits, its command_length fixed up or not."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        octets = draw(st.binary(min_size=1, max_size=8))
        if kind == "insert":
            data[pos:pos] = octets
        elif kind == "delete":
            del data[pos : pos + len(octets)]
        else:
            data[pos : pos + len(octets)] = octets
    if len(data) >= 4 and draw(st.booleans()):
        data[:4] = len(data).to_bytes(4, "big")  # so the edits reach the body parser
    return bytes(data)


garbage = st.lists(
    st.binary(max_size=64) | mutated_pdu() | st.sampled_from(VALID), min_size=1, max_size=3
).map(b"".join)


async def one_round(data: bytes) -> None:
    """A good bind, ``data`` then EOF from the SMSC; the backend must reconnect and accept."""
    smsc = RawSmsc()
    await smsc.start()
    sender = SmppBackend(smpp_settings(smsc.port, timeout=2.0, reconnect_min=0.01))
    events = Events()
    await sender.start(events.on_receipt, events.on_inbound)
    try:
        await smsc.send_raw(data, close=True)  # EOF: a valid prefix cannot stall the read
        await until(lambda: len(smsc.binds) == 2, timeout=5.0)
        for _ in range(100):
            [result] = await sender.send(singles(1))
            assert result.error != "backend stopped"
            if result.status == "accepted":
                break
            assert result.status == "retry"
            await asyncio.sleep(0.02)
        assert result.status == "accepted", result
        assert io_thread_alive()
    finally:
        await sender.stop()
        await smsc.close()


@settings(max_examples=60, deadline=None)
@given(garbage)
@example(MALFORMED["zero length"])
@example(MALFORMED["length 8"])
@example(MALFORMED["short bind_receiver"])
@example(MALFORMED["bind_receiver, TLV 0x0005"])
@example(raw("unbind_resp"))
def test_garbage_from_the_smsc_never_ends_the_io_thread(data: bytes) -> None:
    with error_records() as records:
        asyncio.run(one_round(data))
    assert records == []  # no "the SMPP I/O thread failed"
