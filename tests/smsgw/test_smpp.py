"""smsgw.smpp: the SMPP backend against Net::SMPP's example SMSC and a scripted SMSC."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from smsgw.backend import Inbound, OutgoingSms, Receipt, SendResult
from smsgw.queue import normalize_provider_id
from smsgw.segment import segment
from smsgw.smpp import SmppBackend, SmppError, SmppSettings
from smsgw.smppwire import (
    ReceiptText,
    SubmitSm,
    TokenBucket,
    command_length_problem,
    decode_short_message,
    e164_sender,
    parse_receipt_text,
    receipt_from_fields,
    submit_result,
)
from tests.smsgw.smsc import ScriptedSmsc, perl_smsc, receipt_id, submit_id, wait_sync
from tests.strategies import mutated

LINK = ("https://t.me/proxy?server=relay.example.kz&port=443&secret=ee"
        + "0123456789abcdef" * 2 + "7777772e676f6f676c652e636f6d")  # fmt: skip
KAZAKH = "Прокси сілтемесі: қосылу үшін басыңыз. Егер жұмыс істемесе, келесісін қолданыңыз."
NUMBER = "+77012345678"


def outgoing(text: str, first_id: int, reference: int) -> list[OutgoingSms]:
    seg = segment(text, reference=reference)
    return [
        OutgoingSms(
            first_id + i,
            NUMBER,
            f"ref{first_id:09d}",
            part.short_message,
            part.esm_class,
            seg.data_coding,
            part.text,
        )  # fmt: skip
        for i, part in enumerate(seg.parts)
    ]


def batch(gsm7: int, ucs2: int) -> list[OutgoingSms]:
    """Two-part GSM-7 links (the link and a long note) and two-part UCS-2 Kazakh messages."""
    out: list[OutgoingSms] = []
    for n in range(gsm7 + ucs2):
        text = f"{LINK} #{n} " + "x" * 40 if n < gsm7 else f"{KAZAKH} {n}"
        out += outgoing(text, len(out) + 1, n & 0xFF)
    return out


def singles(count: int, first_id: int = 1) -> list[OutgoingSms]:
    return [m for n in range(count) for m in outgoing(f"PROXY {n}", first_id + n, 0)]


@dataclass
class Events:
    receipts: list[Receipt] = field(default_factory=list)
    inbound: list[Inbound] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)

    def on_receipt(self, receipt: Receipt) -> None:
        self.threads.add(threading.current_thread().name)
        self.receipts.append(receipt)

    def on_inbound(self, message: Inbound) -> None:
        self.threads.add(threading.current_thread().name)
        self.inbound.append(message)


def settings(port: int, **overrides: object) -> SmppSettings:
    values: dict[str, object] = dict(
        host="127.0.0.1", port=port, system_id="GSMSGW", password="secret", timeout=5.0,
        reconnect_min=0.05, reconnect_max=0.2, source_addr="KOPIR",
    )  # fmt: skip
    values.update(overrides)
    return SmppSettings(**values)  # type: ignore[arg-type]


Connect = Callable[..., Awaitable[tuple[SmppBackend, Events]]]


@pytest_asyncio.fixture
async def smsc() -> AsyncIterator[ScriptedSmsc]:
    server = await ScriptedSmsc().start()
    yield server
    await server.close()
    assert server.unmatched == []  # every response carried its request's sequence


@pytest_asyncio.fixture
async def connect(smsc: ScriptedSmsc) -> AsyncIterator[Connect]:
    backends: list[SmppBackend] = []

    async def make(**overrides: object) -> tuple[SmppBackend, Events]:
        backend, events = SmppBackend(settings(smsc.port, **overrides)), Events()
        await backend.start(events.on_receipt, events.on_inbound)
        backends.append(backend)
        return backend, events

    yield make
    for backend in backends:
        await backend.stop()
    assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def send_until_accepted(backend: SmppBackend, messages: list[OutgoingSms]) -> int:
    """Resend what comes back as retry, as the queue worker would; returns the rounds taken."""
    for rounds in range(1, 50):
        retry = {r.message_id for r in await backend.send(messages) if r.status == "retry"}
        if not retry:
            return rounds
        messages = [m for m in messages if m.message_id in retry]
        await asyncio.sleep(0.05)
    raise AssertionError(f"still retrying {len(messages)} messages")


def by_status(results: list[SendResult], status: str) -> list[SendResult]:
    return [r for r in results if r.status == status]


# -- against the real Net::SMPP SMSC ---------------------------------------------------------


@pytest.mark.asyncio
async def test_real_net_smpp_smsc_accepts_every_part(tmp_path: Path) -> None:
    messages = batch(gsm7=500, ucs2=500)
    assert len(messages) == 2000
    with perl_smsc(tmp_path) as real:
        backend, events = SmppBackend(settings(real.port, host=real.host)), Events()
        await backend.start(events.on_receipt, events.on_inbound)
        try:
            results = await backend.send(messages)
        finally:
            await backend.stop()  # unbind: the SMSC's child answers, exits and flushes stdout
        assert sorted(r.message_id for r in results) == [m.message_id for m in messages]
        assert {(r.status, r.provider_id) for r in results} == {("accepted", "123456789")}
        await asyncio.to_thread(wait_sync, lambda: real.received()[-1:] == ["unbind"], 5.0)
        received = real.received()
    assert received[0] == "bind_transceiver" and received[-1] == "unbind"
    assert received.count("submit_sm") == 2000


@pytest.mark.asyncio
async def test_the_same_batch_arrives_byte_exact(connect: Connect, smsc: ScriptedSmsc) -> None:
    messages = batch(gsm7=500, ucs2=500)
    backend, _ = await connect()
    results = await backend.send(messages)
    assert {r.status for r in results} == {"accepted"}
    got = [s.sm for s in smsc.submits]
    assert [g.short_message for g in got] == [m.short_message for m in messages]
    for sent, sm in zip(messages, got, strict=True):
        n = (sent.message_id - 1) // 2  # two parts per message
        assert sm.short_message[:6] == bytes((5, 0, 3, n & 0xFF, 2, 2 - sent.message_id % 2))
        assert sm.esm_class == 0x40
        assert sm.data_coding == (0 if n < 500 else 8)
        assert (sm.registered_delivery, sm.destination_addr) == (1, NUMBER[1:])
        assert (sm.dest_addr_ton, sm.dest_addr_npi, sm.source_addr) == (1, 1, "KOPIR")
    assert smsc.binds[0].system_id == "GSMSGW" and smsc.binds[0].interface_version == 0x34


# -- against the scripted SMSC ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_throttled_messages_come_back_as_retry(connect: Connect, smsc: ScriptedSmsc):
    smsc.script.throttle = {2, 5}
    backend, _ = await connect(retry_delay=7.0)
    messages = singles(6)
    results = {r.message_id: r for r in await backend.send(messages)}
    retry = [results[2], results[5]]
    assert [r.status for r in retry] == ["retry", "retry"]
    assert {r.retry_after for r in retry} == {7.0}
    assert "ESME_RTHROTTLED (0x00000058)" in str(retry[0].error)
    again = await backend.send([m for m in messages if m.message_id in (2, 5)])
    assert [r.status for r in again] == ["accepted", "accepted"]


@pytest.mark.asyncio
async def test_receipts_match_submit_ids(connect: Connect, smsc: ScriptedSmsc) -> None:
    smsc.script.receipts = True
    backend, events = await connect()
    results = await backend.send(singles(10))
    await until(lambda: len(events.receipts) == 10)
    assert {r.provider_id for r in events.receipts} == {r.provider_id for r in results}
    assert {r.status for r in events.receipts} == {"delivered"}
    assert submit_id(1) != receipt_id(1)  # spelled differently on the wire
    assert events.threads == {threading.current_thread().name}  # called on the event loop
    await until(lambda: smsc.commands().count("deliver_sm_resp") == 10)


@pytest.mark.asyncio
async def test_inbound_stop_reaches_on_inbound(connect: Connect, smsc: ScriptedSmsc) -> None:
    _, events = await connect()
    await smsc.send_inbound("77012345678", b"STOP")
    await smsc.send_inbound("77019876543", "СТОП".encode("utf-16-be"), data_coding=8)
    await until(lambda: len(events.inbound) == 2)
    assert events.inbound == [Inbound("+77012345678", "STOP"), Inbound("+77019876543", "СТОП")]
    await until(lambda: smsc.commands().count("deliver_sm_resp") == 2)


@pytest.mark.asyncio
async def test_a_dropped_connection_returns_retry_then_finishes(
    connect: Connect, smsc: ScriptedSmsc
) -> None:
    smsc.script.drop_on = 25
    smsc.script.response_delay = 0.005
    backend, _ = await connect(window=8)
    messages = singles(60)
    results = await backend.send(messages)
    assert sorted(r.message_id for r in results) == list(range(1, 61))  # nothing lost
    accepted, retry = by_status(results, "accepted"), by_status(results, "retry")
    assert len(accepted) + len(retry) == 60 and len(accepted) >= 16 and retry
    assert all("link dropped" in str(r.error) for r in retry)
    await until(lambda: smsc.connections == 2)  # reconnected on its own
    retried = {r.message_id for r in retry}
    await send_until_accepted(backend, [m for m in messages if m.message_id in retried])
    assert len({s.sm.short_message for s in smsc.submits if s.status == 0}) == 60


@pytest.mark.asyncio
async def test_an_unanswered_submit_drops_the_link_and_comes_back_as_retry(
    connect: Connect, smsc: ScriptedSmsc
) -> None:
    smsc.script.response_delay = 30.0
    backend, _ = await connect(timeout=0.3)
    results = await backend.send(singles(3))
    assert {r.status for r in results} == {"retry"}
    assert "no submit_sm_resp in 0.3 s" in str(results[0].error)
    smsc.script.response_delay = 0.0
    await until(lambda: smsc.connections == 2)
    await send_until_accepted(backend, singles(3))


@pytest.mark.asyncio
async def test_no_number_in_any_log_line(
    connect: Connect, smsc: ScriptedSmsc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smsc.script.drop_on = 3
    backend, _ = await connect()
    [refused] = await backend.send([replace(singles(1)[0], short_message=b"x" * 300)])
    assert (refused.status, refused.error) == (
        "failed",
        "short_message of 300 octets is not a single SMS",
    )
    await backend.send(singles(5))
    await until(lambda: smsc.connections == 2)
    assert "dropped" in caplog.text and "not sent to ref=ref000000001" in caplog.text
    for spelling in (NUMBER[1:], NUMBER[1:].encode().hex()):
        assert spelling not in caplog.text


@pytest.mark.asyncio
async def test_the_window_is_never_exceeded(connect: Connect, smsc: ScriptedSmsc) -> None:
    smsc.script.response_delay = 0.02
    backend, _ = await connect(window=5)
    results = await backend.send(singles(100))
    assert {r.status for r in results} == {"accepted"}
    assert smsc.max_outstanding == 5


@pytest.mark.asyncio
async def test_throughput_limit_holds(connect: Connect, smsc: ScriptedSmsc) -> None:
    backend, _ = await connect(throughput=200.0, window=50)
    results = await backend.send(singles(600))
    assert {r.status for r in results} == {"accepted"}
    times = [s.at for s in smsc.submits]
    rate = (len(times) - 1) / (times[-1] - times[0])
    print(f"measured {rate:.1f} msg/s against a limit of 200 (ratio {rate / 200:.3f})")
    assert 180 <= rate <= 220


@pytest.mark.asyncio
async def test_smsc_unbind_is_answered_and_the_backend_reconnects(
    connect: Connect, smsc: ScriptedSmsc
) -> None:
    backend, _ = await connect()
    await smsc.unbind()
    await until(lambda: smsc.connections == 2 and len(smsc.binds) == 2)
    assert "unbind_resp" in smsc.commands(connection=1)
    await send_until_accepted(backend, singles(3))


@pytest.mark.asyncio
async def test_stop_sends_unbind(connect: Connect, smsc: ScriptedSmsc) -> None:
    backend, _ = await connect()
    await backend.send(singles(2))
    await backend.stop()
    assert smsc.commands()[-1] == "unbind"
    with pytest.raises(SmppError, match="not started"):
        await backend.send(singles(1))


@pytest.mark.asyncio
async def test_stop_gives_back_unanswered_work_as_retry(
    connect: Connect, smsc: ScriptedSmsc
) -> None:
    smsc.script.response_delay = 5.0
    backend, _ = await connect(stop_grace=0.1)
    sending = asyncio.create_task(backend.send(singles(30)))
    await until(lambda: len(smsc.submits) == 10)  # the window is full
    await backend.stop()
    results = await sending
    assert sorted(r.message_id for r in results) == list(range(1, 31))
    assert {r.status for r in results} == {"retry"}
    assert smsc.commands()[-1] == "unbind"


@pytest.mark.asyncio
async def test_enquire_link_is_sent_when_the_smsc_is_quiet(
    connect: Connect, smsc: ScriptedSmsc
) -> None:
    await connect(enquire_link=0.1)
    await until(lambda: smsc.commands().count("enquire_link") >= 2)
    assert smsc.connections == 1


@pytest.mark.asyncio
async def test_a_bad_password_is_a_clear_error(smsc: ScriptedSmsc) -> None:
    backend = SmppBackend(settings(smsc.port, password="wrong"))
    with pytest.raises(SmppError, match=r"wrong password \(ESME_RINVPASWD \(0x0000000E\)\)"):
        await backend.start(Events().on_receipt, Events().on_inbound)
    assert not [t for t in threading.enumerate() if t.name == "smsgw-smpp"]


@pytest.mark.asyncio
async def test_an_unreachable_smsc_is_a_clear_error(smsc: ScriptedSmsc) -> None:
    port = smsc.port
    await smsc.close()
    backend = SmppBackend(settings(port))
    with pytest.raises(SmppError, match=f"cannot reach the SMSC at 127.0.0.1:{port}"):
        await backend.start(Events().on_receipt, Events().on_inbound)


def test_settings_refuse_what_smpplib_would_truncate() -> None:
    with pytest.raises(SmppError, match="8 characters"):
        settings(1, password="123456789")
    with pytest.raises(SmppError, match="source_addr"):
        settings(1, source_addr="A" * 21)
    with pytest.raises(SmppError, match="one octet"):
        settings(1, dest_addr_ton=256)
    assert "secret" not in repr(settings(1))


# -- sans-IO parts ---------------------------------------------------------------------------

RECEIPT = ("id:00000001A2B01 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
           "stat:DELIVRD err:000 text:id:9 stat:UNDELIV")  # fmt: skip


def test_parse_receipt_text() -> None:
    assert parse_receipt_text(RECEIPT) == ReceiptText("00000001A2B01", "DELIVRD", "000")
    assert parse_receipt_text("ID:7 STAT:undeliv") == ReceiptText("7", "UNDELIV", None)
    for garbage in ("", "hello", "id: stat:DELIVRD", "id:1 stat:HAPPY", "text:id:1 stat:DELIVRD"):
        assert parse_receipt_text(garbage) is None


@given(st.one_of(st.text(), mutated(RECEIPT, special=[" ", ":", "id:", "stat:", "text:"])))
def test_parse_receipt_text_never_raises(text: str) -> None:
    parsed = parse_receipt_text(text)
    assert parsed is None or (parsed.id.isascii() and " " not in parsed.id)


def test_receipt_fields() -> None:
    got = receipt_from_fields(RECEIPT.encode(), None, None, decimal=False)
    assert got == Receipt(normalize_provider_id(submit_id(1)), "delivered")
    by_tlv = receipt_from_fields(b"", "0ABC", 8, decimal=False)
    assert by_tlv == Receipt("abc", "failed", "REJECTD")
    assert receipt_from_fields(b"id:1 stat:ENROUTE", None, None, decimal=False) is None
    undeliv = receipt_from_fields(b"id:1 stat:UNDELIV err:0B", None, None, decimal=False)
    assert undeliv == Receipt("1", "failed", "UNDELIV err:0B")
    assert receipt_from_fields(b"id:255 stat:EXPIRED", None, None, decimal=True) == Receipt(
        "ff", "expired", "EXPIRED"
    )


def test_decimal_receipt_ids_are_ascii_digits_only() -> None:
    # "²".isdigit() is true but int("²") raises; and int() refuses more than 4,300 digits.
    for ident in ("²", "1²", " 12³ ", "9" * 5000):
        got = receipt_from_fields(b"", ident, 2, decimal=True)
        assert got == Receipt(normalize_provider_id(ident), "delivered")
    assert receipt_from_fields(b"", " 255 ", 2, decimal=True) == Receipt("ff", "delivered")


@given(
    st.binary(max_size=200) | st.text("0123456789²³¹ id:stat:DELIVRD").map(str.encode),
    st.none() | st.text(max_size=80) | st.text("0123456789²³¹", min_size=1, max_size=5000),
    st.none() | st.integers(0, 9) | st.integers(-(2**31), 2**31), st.booleans(),
)  # fmt: skip
def test_receipt_from_fields_never_raises(
    short_message: bytes, receipted: str | None, state: int | None, decimal: bool
) -> None:
    receipt = receipt_from_fields(short_message, receipted, state, decimal=decimal)
    assert receipt is None or receipt.status in ("delivered", "expired", "failed")


def test_command_length_is_bounded() -> None:
    assert command_length_problem(16) is None and command_length_problem(65536) is None
    for length in (0, 8, 15, 65537, 2**32 - 1):
        assert command_length_problem(length) == f"command_length {length} is not 16 to 65536"


def test_decode_short_message() -> None:
    assert decode_short_message(segment("a{€}b").parts[0].body, 0) == "a{€}b"
    assert decode_short_message(b"\x05\x00\x03\x01\x02\x01STOP", 0, esm_class=0x40) == "STOP"
    assert decode_short_message("қ".encode("utf-16-be"), 8) == "қ"
    assert decode_short_message(b"\xe9", 3) == "é"
    assert decode_short_message(b"\xff\x1b", 0) == "\ufffd"


def test_e164_sender() -> None:
    assert e164_sender("77012345678", 1) == "+77012345678"
    assert e164_sender("0077012345678", 0) == "+77012345678"
    assert e164_sender("+77012345678", 0) == "+77012345678"
    assert e164_sender("Beeline", 5) == "Beeline"


def test_submit_results() -> None:
    assert submit_result(1, 0, " 000A1B ", 5.0) == SendResult(1, "accepted", "a1b")
    assert submit_result(1, 0x14, "", 5.0).status == "retry"
    failed = submit_result(1, 0x0B, "", 5.0)
    assert (failed.status, failed.error) == ("failed", "ESME_RINVDSTADR (0x0000000B)")


def test_token_bucket_is_exact_over_time() -> None:
    bucket, now, sent = TokenBucket(200.0, now=0.0), 0.0, 0
    while now < 10.0:
        delay = bucket.delay(now)
        if delay:
            now += delay + 0.0007  # the thread always wakes a little late
            continue
        bucket.take(now)
        sent += 1
    assert 2000 <= sent <= 2000 + bucket.burst + 1


octet = st.integers(0, 255)
address = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@given(
    st.text("0123456789", min_size=1, max_size=20), st.binary(min_size=1, max_size=254),
    octet, octet, address, octet, octet, octet, octet, st.integers(1, 0x7FFFFFFF),
)  # fmt: skip
def test_submit_sm_is_byte_for_byte_what_smpplib_encodes(
    to, message, esm, coding, source, ston, snpi, dton, dnpi, sequence
) -> None:
    import smpplib.client
    import smpplib.smpp

    fields = dict(destination_addr=to, short_message=message, esm_class=esm, data_coding=coding,
                  source_addr=source, source_addr_ton=ston, source_addr_npi=snpi,
                  dest_addr_ton=dton, dest_addr_npi=dnpi, registered_delivery=1)  # fmt: skip
    client = smpplib.client.Client("127.0.0.1", 9, allow_unknown_opt_params=True)  # never connected
    theirs = smpplib.smpp.make_pdu("submit_sm", client=client, **fields)
    theirs.sequence = sequence
    ours = SubmitSm(**fields).encode(sequence)  # type: ignore[arg-type]
    assert ours == theirs.generate()
    parsed = smpplib.smpp.parse_pdu(ours, client=client)
    assert (parsed.sequence, parsed.destination_addr, parsed.short_message) == (
        sequence,
        to.encode(),
        message,
    )


def test_submit_sm_refuses_what_is_not_one_sms() -> None:
    with pytest.raises(ValueError, match="short_message"):
        SubmitSm("77012345678", b"x" * 255)
    with pytest.raises(ValueError, match="destination_addr"):
        SubmitSm("7" * 21, b"x")
    assert "7701" not in repr(SubmitSm("77012345678", b"x"))
