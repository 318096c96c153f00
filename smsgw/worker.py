"""The queue worker: claim, decrypt just in time, send through a backend, record the outcome.

Theory of operation
-------------------
``enqueue`` turns one text for one subscriber into queue rows, one per SMS part, keyed by
(campaign, recipient ref, part) so enqueueing twice sends once. ``Worker.step`` claims a window
of messages (``queued`` → ``sending``), decrypts each recipient only for the call to the
backend, and records each result: ``accepted`` (with the provider id), ``retry`` later, or
``failed``. Receipts from the backend move messages to ``delivered``/``failed``/``expired``.

On start the worker calls ``Queue.recover``: messages left in ``sending`` by a crash go back
to ``queued``, so delivery is at least once and duplicates are at most one window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from smsgw.backend import Backend, Inbound, OutgoingSms, Receipt, SendResult
from smsgw.errors import QueueError
from smsgw.numbers import NumberKey
from smsgw.queue import Message, NewMessage, Queue
from smsgw.segment import Segmentation

log = logging.getLogger("kopir.sms")


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
    ref, blob = key.ref(number), key.encrypt(number)
    rows = [
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
    return [queue.enqueue(row, now) for row in rows]


@dataclass
class StepReport:
    accepted: int = 0
    retried: int = 0
    failed: int = 0


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue, self.key, self.backend = queue, key, backend
        self.window, self.retry_delay = window, retry_delay
        self.on_inbound = on_inbound
        self.clock = clock

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
        for result in await self.backend.send(outgoing):
            self._record(result, report)
        return report

    async def drain(self, max_steps: int = 100_000) -> StepReport:
        """Send until nothing is due now (bounded); totals of every step."""
        total = StepReport()
        for _ in range(max_steps):
            report = await self.step()
            if not (report.accepted or report.retried or report.failed):
                break
            total.accepted += report.accepted
            total.retried += report.retried
            total.failed += report.failed
        return total

    def _outgoing(self, message: Message) -> OutgoingSms:
        return OutgoingSms(
            message.id, self.key.decrypt(message.recipient_ct), message.recipient_ref,
            message.udh + message.body, message.esm_class, message.data_coding, message.text,
        )  # fmt: skip

    def _record(self, result: SendResult, report: StepReport) -> None:
        now = self.clock()
        if result.status == "accepted" and result.provider_id:
            self.queue.accepted(result.message_id, result.provider_id, now)
            report.accepted += 1
        elif result.status == "retry":
            delay = result.retry_after if result.retry_after is not None else self.retry_delay
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
        if self.on_inbound is not None:
            self.on_inbound(message)
