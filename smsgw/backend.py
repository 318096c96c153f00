"""The one interface every SMS backend implements (outbox, SMPP, HTTP providers).

Theory of operation
-------------------
The queue worker claims messages, decrypts each recipient just before sending, and hands a
batch of ``OutgoingSms`` to ``Backend.send``. The backend answers one ``SendResult`` per
message: ``accepted`` (with the provider's message id), ``retry`` (throttled, queue full,
connection lost: try again later) or ``failed`` (permanent). Delivery receipts and inbound
messages arrive later, whenever the provider sends them, through the two callbacks given to
the backend; the worker turns receipts into queue transitions and inbound text into commands.

Backends never log a phone number; ``OutgoingSms.ref`` is what may appear in a log line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

SendStatus = Literal["accepted", "retry", "failed"]
ReceiptStatus = Literal["delivered", "failed", "expired"]


@dataclass(frozen=True)
class OutgoingSms:
    """One SMS part ready to send."""

    message_id: int
    """The queue's id, to match the result."""
    to: str = field(repr=False)
    """E.164 number, decrypted for this send only."""
    ref: str
    """The recipient's keyed reference: the only recipient identifier allowed in logs."""
    short_message: bytes
    """UDH (if any) followed by the encoded body."""
    esm_class: int
    data_coding: int
    text: str
    """The part's text, for backends that take text (HTTP providers, outbox)."""


@dataclass(frozen=True)
class SendResult:
    message_id: int
    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds to wait before retrying, when the provider said so."""


@dataclass(frozen=True)
class Receipt:
    """A delivery report: the provider's id for the message and what became of it."""

    provider_id: str
    status: ReceiptStatus
    error: str | None = None


@dataclass(frozen=True)
class Inbound:
    """An SMS a citizen sent to us (PROXY, STOP, HELP...)."""

    sender: str = field(repr=False)
    text: str


ReceiptHandler = Callable[[Receipt], None]
InboundHandler = Callable[[Inbound], None]


class Backend(Protocol):
    """What the worker needs from a backend."""

    name: str

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        """Connect (or get ready) and start delivering receipts and inbound messages."""

    async def send(self, batch: Sequence[OutgoingSms]) -> list[SendResult]:
        """Submit every message; one result per message, in any order."""

    async def stop(self) -> None:
        """Finish or abandon in-flight work cleanly and disconnect."""
