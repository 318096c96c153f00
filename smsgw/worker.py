"""The queue worker: claim, decrypt just in time, send through a backend, record the outcome.

Theory of operation
-------------------
``enqueue`` turns one text for one subscriber into queue rows, one per SMS part, keyed by
(campaign, recipient ref, part) so enqueueing twice sends once. ``Worker.step`` claims a window
of messages (``queued`` → ``sending``), decrypts each recipient only for the call to the
backend, and records each result: ``accepted`` (with the provider id), ``retry`` later, or
``failed``. Receipts from the backend move messages to ``delivered``/``failed``/``expired``.

A ``retry`` that names no wait (``retry_after``) backs off: ``retry_delay`` after the first
attempt, doubling with each attempt up to ``MAX_BACKOFF`` times it.

On start the worker calls ``Queue.recover``: messages left in ``sending`` by a crash go back
to ``queued``, so delivery is at least once and duplicates are at most one window.

Inbound SMS (from a backend that receives: SMPP ``deliver_sm``, the Android app's and Twilio's
webhooks) go to ``commands``, a ``CommandHandler`` (``subscriber_commands`` binds one to the
subscriber store). The sender is normalised to E.164 (a sender that is not a phone number is
ignored), STOP removes the subscriber, and the reply, if the rate limit allows one, is queued
for that number like any message and wakes ``run``, which sends until told to stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from smsgw.backend import Backend, Inbound, OutgoingSms, Receipt, SendResult
from smsgw.commands import CommandHandler, Language, RateLimit
from smsgw.errors import EncodingError, QueueError, SubscriberError
from smsgw.numbers import NumberKey, normalize
from smsgw.queue import Message, NewMessage, Queue
from smsgw.segment import Segmentation, segment
from smsgw.subscribers import SubscriberStore

log = logging.getLogger("kopir.sms")

MAX_BACKOFF = 64
"""A retry without ``retry_after`` waits at most this many times ``retry_delay``."""
LinksFor = Callable[[str, Language], str | None]
"""Given a number and a language, the text answering PROXY (fresh links), or None."""


def enqueue(
    queue: Queue,
    key: NumberKey,
    number: str,
    campaign: str,
    message: Segmentation,
    now: float,
    expires_at: float | None = None,
) -> list[int]:
    """Queue every part of ``message`` for ``number`` (E.164); returns the queue ids."""
    rows = new_messages(key, number, campaign, message, expires_at)
    return [queue.enqueue(row, now) for row in rows]


def new_messages(
    key: NumberKey,
    number: str,
    campaign: str,
    message: Segmentation,
    expires_at: float | None = None,
) -> list[NewMessage]:
    """The queue rows for every part of ``message`` to ``number`` (E.164), for
    ``Queue.enqueue_many``: a campaign queues all its rows in one transaction."""
    ref, blob = key.ref(number), key.encrypt(number)
    return [
        NewMessage(
            campaign=campaign,
            recipient_ref=ref,
            recipient_ct=blob,
            part=i,
            parts=message.count,
            body=part.body,
            udh=part.udh,
            data_coding=message.data_coding,
            esm_class=part.esm_class,
            text=part.text,
            expires_at=expires_at,
        )
        for i, part in enumerate(message.parts, start=1)
    ]


def subscriber_commands(
    store: SubscriberStore,
    key: NumberKey,
    links: LinksFor | None = None,
    limit: RateLimit | None = None,
) -> CommandHandler:
    """Inbound commands applied to ``store``: STOP removes, replies in the stored language."""

    def language_of(number: str) -> str | None:
        try:
            return store.get(key.ref(number)).language
        except SubscriberError:
            return None

    return CommandHandler(
        remove=store.remove,
        language_of=language_of,
        request_links=links or (lambda number, language: None),
        ref=key.ref,
        limit=limit,
    )


@dataclass
class StepReport:
    accepted: int = 0
    retried: int = 0
    failed: int = 0

    def add(self, other: StepReport) -> None:
        self.accepted += other.accepted
        self.retried += other.retried
        self.failed += other.failed

    def __bool__(self) -> bool:
        return bool(self.accepted or self.retried or self.failed)


class Worker:
    def __init__(
        self,
        queue: Queue,
        key: NumberKey,
        backend: Backend,
        *,
        window: int = 50,
        retry_delay: float = 30.0,
        on_inbound: Callable[[Inbound], None] | None = None,
        commands: CommandHandler | None = None,
        default_region: str = "KZ",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue, self.key, self.backend = queue, key, backend
        self.window, self.retry_delay = window, retry_delay
        self.on_inbound = on_inbound
        """Also told of every inbound SMS (after ``commands``)."""
        self.commands = commands
        self.default_region = default_region
        self.clock = clock
        self._wake = asyncio.Event()

    async def start(self) -> int:
        """Requeue what a crash left in flight, then start the backend; returns how many."""
        recovered = self.queue.recover(self.clock())
        await self.backend.start(self._receipt, self._inbound)
        return recovered

    async def stop(self) -> None:
        await self.backend.stop()

    async def step(self) -> StepReport:
        """Send one window of due messages."""
        await asyncio.sleep(0)  # let receipts that arrived meanwhile be recorded first
        messages = self.queue.claim(self.window, self.clock())
        report = StepReport()
        if not messages:
            return report
        outgoing = [self._outgoing(m) for m in messages]
        attempts = {m.id: m.attempts for m in messages}
        for result in await self.backend.send(outgoing):
            self._record(result, report, attempts.get(result.message_id, 1))
        return report

    async def drain(self, max_steps: int = 100_000) -> StepReport:
        """Send until nothing is due now (bounded); totals of every step."""
        total = StepReport()
        for _ in range(max_steps):
            report = await self.step()
            if not report:
                break
            total.add(report)
        return total

    async def run(
        self,
        stop: asyncio.Event,
        idle: float = 1.0,
        on_step: Callable[[StepReport], None] | None = None,
    ) -> StepReport:
        """Send until ``stop`` is set: due messages a window at a time; when none are due,
        wait up to ``idle`` seconds, or until an inbound command queues a reply.
        ``on_step`` is told of every window's results (e.g. for a status page)."""
        total = StepReport()
        while not stop.is_set():
            report = await self.step()
            total.add(report)
            if on_step is not None:
                on_step(report)
            if not report:
                self.queue.expire(self.clock())
                await self._idle(stop, idle)
        return total

    async def _idle(self, stop: asyncio.Event, seconds: float) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def _outgoing(self, message: Message) -> OutgoingSms:
        return OutgoingSms(
            message.id, self.key.decrypt(message.recipient_ct), message.recipient_ref,
            message.udh + message.body, message.esm_class, message.data_coding, message.text,
        )  # fmt: skip

    def _record(self, result: SendResult, report: StepReport, attempts: int) -> None:
        now = self.clock()
        if result.status == "accepted":
            # An SMSC may accept with an empty message id: the message was taken all the same,
            # only its receipts cannot be matched.
            provider_id = result.provider_id or f"no-id-{result.message_id}"
            self.queue.accepted(result.message_id, provider_id, now)
            report.accepted += 1
        elif result.status == "retry":
            delay = result.retry_after
            if delay is None:
                delay = self.retry_delay * min(2 ** max(attempts - 1, 0), MAX_BACKOFF)
            self.queue.retry(result.message_id, result.error or "retry", now, delay)
            report.retried += 1
        else:
            self.queue.fail(result.message_id, result.error or "failed", now)
            report.failed += 1

    def _receipt(self, receipt: Receipt) -> None:
        now = self.clock()
        moves = {
            "delivered": lambda: self.queue.delivered_by_provider_id(receipt.provider_id, now),
            "failed": lambda: self.queue.failed_by_provider_id(
                receipt.provider_id, receipt.error or "undelivered", now
            ),
            "expired": lambda: self.queue.expired_by_provider_id(receipt.provider_id, now),
        }
        try:
            if not moves[receipt.status]():
                log.debug("receipt for unknown or settled message %s", receipt.provider_id)
        except QueueError as exc:
            log.warning("receipt ignored: %s", exc)

    def _inbound(self, message: Inbound) -> None:
        if self.commands is not None:
            self._command(message)
        if self.on_inbound is not None:
            self.on_inbound(message)

    def _command(self, message: Inbound) -> None:
        try:
            number = normalize(message.sender, self.default_region, check=False)
        except SubscriberError:
            log.info("inbound SMS from a sender that is not a phone number: ignored")
            return
        assert self.commands is not None
        now = self.clock()
        outcome = self.commands.handle(number, message.text, now)
        who = self.key.short_ref(number)
        if outcome.reply is None:
            log.info("inbound %s from %s: no reply (rate-limited)", outcome.command, who)
            return
        campaign = f"reply-{int(now // self.commands.limit.interval)}"
        try:
            enqueue(self.queue, self.key, number, campaign, segment(outcome.reply), now)
        except (EncodingError, QueueError) as exc:
            log.warning("inbound %s from %s: reply not queued: %s", outcome.command, who, exc)
            return
        log.info("inbound %s from %s: reply queued", outcome.command, who)
        self._wake.set()
