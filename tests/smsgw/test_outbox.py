"""The outbox's log shows whole messages, as a phone would: concatenated parts joined."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.backend import OutgoingSms
from smsgw.compose import instruction_message, link_message
from smsgw.outbox import OutboxBackend, read_outbox
from smsgw.segment import ESM_CLASS_UDHI, Segmentation, concatenation, segment

LINK = (
    "https://t.me/proxy?server=relay1.example.org&port=443&secret=ee0123456789abcdef0123456789"
    "abcdef6578616d706c652e636f6d&kid=Rz8xPc6pVCY&exp=2026112511&sig=" + "A" * 86
)


def parts(message: Segmentation, ref: str, first_id: int) -> list[OutgoingSms]:
    coding, number = message.data_coding, "+77010000000"
    return [
        OutgoingSms(first_id + n, number, ref, p.short_message, p.esm_class, coding, p.text)
        for n, p in enumerate(message.parts)
    ]


def log_lines(outbox: Path) -> list[str]:
    return (outbox / "outbox.log").read_text(encoding="utf-8").splitlines()


@pytest.mark.asyncio
async def test_the_log_joins_parts_once_the_last_arrives_in_any_order(tmp_path: Path) -> None:
    outbox = OutboxBackend(tmp_path / "outbox")
    receipts: list[object] = []
    await outbox.start(receipts.append, lambda _: None)
    alice = parts(link_message(LINK), "a" * 64, 1)
    bob = parts(link_message(LINK), "b" * 64, 3)
    single = parts(segment("Сәлем"), "c" * 64, 5)
    assert len(alice) == len(bob) == 2 and len(single) == 1

    await outbox.send([bob[1], alice[0]])  # nothing whole yet
    assert not (tmp_path / "outbox/outbox.log").exists()
    await outbox.send([single[0], alice[1], bob[0]])
    await outbox.stop()

    lines = log_lines(tmp_path / "outbox")
    assert [line.split(": ", 1)[1] for line in lines] == [
        "Сәлем",
        "Telegram proxy: " + LINK,
        "Telegram proxy: " + LINK,
    ]
    assert " message 5 to cccccccccccc:" in lines[0]
    assert " message 1+2 to aaaaaaaaaaaa:" in lines[1]
    assert " message 3+4 to bbbbbbbbbbbb:" in lines[2]
    assert len(read_outbox(tmp_path / "outbox")) == 5  # every part still has its own file


@pytest.mark.asyncio
async def test_a_long_instruction_reads_whole_in_the_log(tmp_path: Path) -> None:
    outbox = OutboxBackend(tmp_path / "outbox")
    await outbox.start(lambda _: None, lambda _: None)
    message = instruction_message("kk")
    assert message.count > 1  # Cyrillic: UCS-2, several parts
    await outbox.send(list(reversed(parts(message, "d" * 64, 10))))
    text = (tmp_path / "outbox/outbox.log").read_text(encoding="utf-8")
    assert text.count(" message ") == 1 and text.rstrip("\n").endswith(message_text(message))


def message_text(message: Segmentation) -> str:
    return "".join(p.text for p in message.parts)


def test_concatenation_reads_the_segmenters_headers() -> None:
    message = segment("a" * 400)
    read = [concatenation(p.short_message, p.esm_class) for p in message.parts]
    reference = message.parts[0].udh[3]
    assert read == [(reference, 3, 1), (reference, 3, 2), (reference, 3, 3)]
    assert concatenation(segment("short").parts[0].short_message, 0) is None
    # The 16-bit reference form, and an unrelated element before it.
    udh = bytes((0x0A, 0x24, 0x01, 0x00, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01)) + b"x"
    assert concatenation(udh, ESM_CLASS_UDHI) == (0x1234, 2, 1)
    # Nonsense numbers or a cut header: the part stands alone.
    for bad in (b"\x05\x00\x03\x01\x01\x01", b"\x05\x00\x03\x01\x02\x03", b"\x05\x00\x03\x01",
                b"\x03\x00\x05\x01", b"", b"\x00"):  # fmt: skip
        assert concatenation(bad, ESM_CLASS_UDHI) is None, bad


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=160), st.integers(0, 255))
def test_concatenation_never_raises_and_only_returns_sane_numbers(
    data: bytes, esm_class: int
) -> None:
    read = concatenation(data, esm_class)
    if read is not None:
        reference, total, seq = read
        assert esm_class & ESM_CLASS_UDHI and 0 <= reference < 1 << 16 and 1 <= seq <= total
        assert total >= 2 and data[0] < len(data)


@pytest.mark.asyncio
async def test_a_restart_between_the_parts_of_a_message_still_logs_it_whole(
    tmp_path: Path,
) -> None:
    alice = parts(link_message(LINK), "a" * 64, 1)
    bob = parts(link_message(LINK), "b" * 64, 3)
    first = OutboxBackend(tmp_path / "outbox")
    await first.start(lambda _: None, lambda _: None)
    await first.send([bob[0], bob[1], alice[0]])  # bob's whole, alice's first part only
    await first.stop()
    (tmp_path / "outbox/000000000099.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "outbox/000000000098.json").write_text("[1, 2]", encoding="utf-8")

    second = OutboxBackend(tmp_path / "outbox")  # the worker restarted
    await second.start(lambda _: None, lambda _: None)
    await second.send([alice[1]])
    await second.stop()

    lines = log_lines(tmp_path / "outbox")
    assert len(lines) == 2, lines
    assert " message 3+4 to bbbbbbbbbbbb: Telegram proxy: " + LINK in lines[0]
    assert " message 1+2 to aaaaaaaaaaaa: Telegram proxy: " + LINK in lines[1]


@pytest.mark.asyncio
async def test_a_reused_reference_starts_a_new_message(tmp_path: Path) -> None:
    """Concatenation references are 8-bit and come round again: a part whose place is taken
    by an unfinished older message's part starts a new message rather than joining it."""
    old_text, new_text = "first " * 40, "second " * 40
    old = parts(segment(old_text, reference=7), "a" * 64, 1)
    new = parts(segment(new_text, reference=7), "a" * 64, 3)
    assert len(old) == len(new) == 2
    outbox = OutboxBackend(tmp_path / "outbox")
    await outbox.start(lambda _: None, lambda _: None)
    await outbox.send([old[0], new[0], new[1]])  # old's second part never came
    await outbox.stop()
    (line,) = log_lines(tmp_path / "outbox")
    assert line.endswith(" message 3+4 to aaaaaaaaaaaa: " + new_text)
