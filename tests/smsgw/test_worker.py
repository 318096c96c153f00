"""Queue + subscribers + outbox backend, end to end on disk: a small campaign, and privacy."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from smsgw.compose import instruction_message, link_message
from smsgw.numbers import create_key_file
from smsgw.outbox import OutboxBackend, read_outbox
from smsgw.queue import Queue, State
from smsgw.segment import decode
from smsgw.subscribers import SubscriberStore
from smsgw.worker import Worker, enqueue

LINK = (
    "https://t.me/proxy?server=relay1.example.org&port=443&secret=ee0123456789abcdef0123456789"
    "abcdef6578616d706c652e636f6d&kid=Rz8xPc6pVCY&exp=2026112511&sig=" + "A" * 86
)
NUMBERS = [f"+7701{n:07d}" for n in range(1234500, 1234540)]


@pytest.mark.asyncio
async def test_campaign_through_the_outbox_is_delivered_once_and_leaks_no_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = create_key_file(tmp_path / "subscribers.key")
    with SubscriberStore(tmp_path / "subscribers.db", key) as store:
        for number in NUMBERS:
            store.add(number, "kk", "established", "test list", 1.0)
        subscribers = list(store.iter_all())
    queue = Queue(tmp_path / "queue.db")
    for sub in subscribers:
        enqueue(queue, key, sub.number, "c1", link_message(LINK), 2.0)
        enqueue(queue, key, sub.number, "c1-help", instruction_message(sub.language), 2.0)
    again = enqueue(queue, key, subscribers[0].number, "c1", link_message(LINK), 3.0)
    assert len(again) == 2 and queue.counts()[State.QUEUED] == 40 * 4  # idempotent

    worker = Worker(queue, key, OutboxBackend(tmp_path / "outbox"), window=25, clock=lambda: 10.0)
    assert await worker.start() == 0
    report = await worker.drain()
    await worker.stop()
    assert (report.accepted, report.retried, report.failed) == (160, 0, 0)
    assert queue.counts()[State.DELIVERED] == 160  # the outbox reports delivery at once

    outbox = read_outbox(tmp_path / "outbox")
    assert len(outbox) == 160
    link_parts = [
        r for r in outbox if r["text"] and "proxy" in str(r["text"]) or LINK[-20:] in str(r["text"])
    ]
    assert link_parts
    first = sorted((r for r in outbox if r["to_ref"] == outbox[0]["to_ref"]), key=lambda r: r["id"])
    texts = "".join(str(r["text"]) for r in first[:2])
    assert texts == "Telegram proxy: " + LINK
    queue.close()

    # No number, in any spelling, in the queue, the subscriber store, the outbox or the logs.
    blobs = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    logs = caplog.text
    for number in NUMBERS:
        for form in (number, number[1:], "8" + number[2:], number[2:]):
            assert form.encode() not in blobs, form
            assert form not in logs, form


@pytest.mark.asyncio
async def test_crash_between_claim_and_result_resends_only_the_window(tmp_path: Path) -> None:
    key = create_key_file(tmp_path / "k.key")
    queue = Queue(tmp_path / "queue.db")
    for number in NUMBERS[:10]:
        enqueue(queue, key, number, "c", link_message(LINK), 1.0)
    claimed = queue.claim(6, 2.0)  # a worker took 6 parts, then died
    assert len(claimed) == 6
    worker = Worker(queue, key, OutboxBackend(tmp_path / "outbox"), window=4, clock=lambda: 3.0)
    assert await worker.start() == 6  # exactly those go back to queued
    await worker.drain()
    await worker.stop()
    assert queue.counts()[State.DELIVERED] == 20
    assert len(read_outbox(tmp_path / "outbox")) == 20  # each part written once
    queue.close()


def test_decode_matches_outbox_text() -> None:
    message = link_message(LINK)
    assert "".join(decode(p) for p in message.parts) == "Telegram proxy: " + LINK


@pytest.mark.asyncio
async def test_run_sends_what_is_due_and_returns_once_told_to_stop(tmp_path: Path) -> None:
    key = create_key_file(tmp_path / "k.key")
    queue = Queue(tmp_path / "queue.db")
    for number in NUMBERS[:3]:
        enqueue(queue, key, number, "c", link_message(LINK), 1.0)
    worker = Worker(queue, key, OutboxBackend(tmp_path / "outbox"), window=2)
    await worker.start()
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop, idle=3600.0))  # only stop can end its wait
    async with asyncio.timeout(10):
        while queue.counts()[State.DELIVERED] < 6:
            await asyncio.sleep(0.01)
        stop.set()
        report = await running
    await worker.stop()
    assert (report.accepted, report.retried, report.failed) == (6, 0, 0)
    queue.close()
