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


# --- part files that are not well-formed parts are skipped, whatever they hold ---------------


async def first_part_only(outbox: Path) -> tuple[Path, OutgoingSms]:
    """Alice's first part written as the outbox writes it, and her second part, still to come."""
    alice = parts(link_message(LINK), "a" * 64, 1)
    backend = OutboxBackend(outbox)
    await backend.start(lambda _: None, lambda _: None)
    await backend.send([alice[0]])
    await backend.stop()
    (path,) = outbox.glob("*.json")
    return path, alice[1]


async def restart_and_send(outbox: Path, sms: OutgoingSms) -> list[str]:
    """The worker restarted and sends ``sms``; the outbox log's lines (none: [])."""
    backend = OutboxBackend(outbox)
    await backend.start(lambda _: None, lambda _: None)
    await backend.send([sms])
    await backend.stop()
    return log_lines(outbox) if (outbox / "outbox.log").exists() else []


@pytest.mark.parametrize(
    "field",
    [
        '"esm_class": Infinity',  # was OverflowError: start failed
        '"esm_class": -Infinity',
        '"esm_class": NaN',
        '"esm_class": 1e400',
        '"esm_class": 64.0',
        '"esm_class": "64"',
        '"esm_class": true',
        '"esm_class": 320',
        '"id": -1',
        '"id": "1"',
        '"to_ref": 7',
        '"short_message": 5',
        '"text": "\\ud800"',  # a lone surrogate: was accepted, then outbox.log failed to write it
    ],
)
@pytest.mark.asyncio
async def test_start_skips_a_part_file_with_a_bad_field(tmp_path: Path, field: str) -> None:
    import json

    from smsgw.outbox import _read_part

    path, second = await first_part_only(tmp_path / "outbox")
    assert _read_part(path) is not None
    text = path.read_text(encoding="utf-8")
    key = field.split(":")[0].strip('"')
    original = f'"{key}": ' + json.dumps(json.loads(text)[key], ensure_ascii=False)
    assert text.count(original) == 1
    path.write_text(text.replace(original, field), encoding="utf-8")
    assert _read_part(path) is None
    assert await restart_and_send(tmp_path / "outbox", second) == []  # part 1 was skipped


@pytest.mark.asyncio
async def test_start_still_resumes_from_an_intact_part_file(tmp_path: Path) -> None:
    path, second = await first_part_only(tmp_path / "outbox")
    (line,) = await restart_and_send(tmp_path / "outbox", second)
    assert " message 1+2 to aaaaaaaaaaaa: Telegram proxy: " + LINK in line


@pytest.mark.asyncio
async def test_start_skips_deeply_nested_and_huge_part_files(tmp_path: Path) -> None:
    _, second = await first_part_only(tmp_path / "outbox")
    (tmp_path / "outbox/000000000097.json").write_text("[" * 100_000, encoding="utf-8")
    (tmp_path / "outbox/000000000098.json").write_text("9" * 5000, encoding="utf-8")
    (tmp_path / "outbox/000000000099.json").write_bytes(b"\xff\xfe")
    (line,) = await restart_and_send(tmp_path / "outbox", second)
    assert " message 1+2 to aaaaaaaaaaaa: Telegram proxy: " + LINK in line


@pytest.fixture(scope="module")
def mutated_part_files(tmp_path_factory: pytest.TempPathFactory) -> st.SearchStrategy[bytes]:
    """Mutations of a real part file (the mutator of tests/signing, imported here: a module
    that defines tests cannot be imported inside a running hypothesis test)."""
    import asyncio
    import json

    from tests.signing.test_state_files import mutated_json

    path, _ = asyncio.run(first_part_only(tmp_path_factory.mktemp("outbox")))
    valid = json.loads(path.read_bytes())
    return mutated_json(valid)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_fuzz_read_part_returns_a_part_or_none(
    mutated_part_files: st.SearchStrategy[bytes], data: st.DataObject
) -> None:
    import tempfile

    from smsgw.outbox import _read_part

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "000000000001.json"
        path.write_bytes(data.draw(mutated_part_files))
        part = _read_part(path)
    if part is not None:
        (ref, reference, total), seq, (message_id, text) = part
        assert isinstance(ref, str) and isinstance(text, str) and isinstance(message_id, int)
        assert (ref + text).encode("utf-8") and 1 <= seq <= total and 0 <= reference < 1 << 16
