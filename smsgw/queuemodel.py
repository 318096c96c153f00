"""The queue's model: message states and their legal moves, and the rows it takes and gives.

Theory of operation
-------------------
A queued message is one SMS segment to one recipient, moving through ``State`` along
``TRANSITIONS`` (DESIGN.md §6 smsgw, "Queue"); ``smsgw.queue`` stores it and enforces the moves.
``NewMessage`` is what a caller enqueues, checked on construction; ``Message`` and ``Attempt``
are what the queue gives back. None of them holds a phone number: ``recipient_ref`` is the
subscriber's keyed hash and ``recipient_ct`` the encrypted number, and reprs show only the
first ``REF_SHOWN`` characters of the ref. ``scrub_error`` masks phone numbers in providers' error
texts (some echo the destination number), and ``normalize_provider_id`` gives the one spelling
of a provider's message id that is stored and matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from smsgw.errors import QueueError
from smsgw.scrub import scrub_numbers

__all__ = [
    "MAX_ERROR",
    "REF_SHOWN",
    "TRANSITIONS",
    "Attempt",
    "Message",
    "NewMessage",
    "Outcome",
    "State",
    "normalize_provider_id",
    "scrub_error",
]

REF_SHOWN = 12
"""How many characters of ``recipient_ref`` may appear in logs and reprs."""


class State(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.SENDING, State.EXPIRED}),
    State.SENDING: frozenset({State.ACCEPTED, State.QUEUED, State.FAILED}),
    State.ACCEPTED: frozenset({State.DELIVERED, State.FAILED, State.EXPIRED}),
    State.DELIVERED: frozenset(),
    State.FAILED: frozenset(),
    State.EXPIRED: frozenset(),
}
"""The legal moves: ``TRANSITIONS[from]`` is the set of states a message may go to."""


class Outcome(StrEnum):
    """How one attempt (one claim) ended."""

    ACCEPTED = "accepted"
    RETRY = "retry"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """The worker stopped while sending; ``recover`` requeued the message."""


_HEX = re.compile(r"[0-9a-f]+")
_PHONE_LIKE = re.compile(r"\+?[0-9 ()-]{7,20}")
MAX_ERROR = 500


def scrub_error(error: str) -> str:
    """A provider's error text, fit to store and log.

    Providers echo the destination number in errors ("'To' +7701... is not valid"), so every
    number in it is masked (``scrub_numbers``); the text is also cut to ``MAX_ERROR``
    characters.
    """
    return scrub_numbers(error)[:MAX_ERROR]


def normalize_provider_id(provider_id: str) -> str:
    """The form of a provider's message id that is stored and matched.

    Surrounding white space is stripped and letters are lower-cased. An id made only of hex
    digits (which includes every decimal id) also loses its leading zeros, keeping one ``0``
    for an all-zero id: ``" 0A1B "`` → ``"a1b"``, ``"000123"`` → ``"123"``. Ids with other
    characters (UUIDs, ``SM…`` sids) keep their zeros. The base is not converted: a backend
    whose SMSC reports a hex id in decimal in its receipts must convert it first.
    """
    text = provider_id.strip().lower()
    if _HEX.fullmatch(text):
        return text.lstrip("0") or "0"
    return text


@dataclass(frozen=True)
class NewMessage:
    """One SMS segment to enqueue. Checked on construction; bad values raise ``QueueError``."""

    campaign: str
    recipient_ref: str
    """The subscriber's keyed hash; never a phone number."""
    recipient_ct: bytes
    """The encrypted number, opaque to the queue."""
    part: int
    """1-based index of this segment in its message."""
    parts: int
    body: bytes
    """The encoded ``short_message``."""
    udh: bytes = b""
    data_coding: int = 0
    esm_class: int = 0
    text: str = ""
    """The readable text, for the outbox backend; may hold the link, never the number."""
    expires_at: float | None = None
    """After this time the message is not sent any more; ``None`` never expires."""

    def __post_init__(self) -> None:
        _check_new(self)

    def __repr__(self) -> str:
        ref = self.recipient_ref[:REF_SHOWN]
        return f"NewMessage(campaign={self.campaign!r}, ref={ref!r}, part={self.part}/{self.parts})"


def _check_new(m: NewMessage) -> None:
    where = f"message {m.campaign!r}/{m.recipient_ref[:REF_SHOWN]!r}/{m.part}"
    if not m.campaign or not m.recipient_ref:
        raise QueueError(f"{where}: campaign and recipient_ref must not be empty")
    if _PHONE_LIKE.fullmatch(m.recipient_ref):
        raise QueueError(f"{where}: recipient_ref looks like a phone number; pass its keyed hash")
    if not 1 <= m.part <= m.parts <= 255:
        raise QueueError(f"{where}: part {m.part} of {m.parts} is not within 1..parts..255")
    if not (0 <= m.data_coding <= 255 and 0 <= m.esm_class <= 255):
        raise QueueError(f"{where}: data_coding and esm_class must each fit in one byte")


@dataclass(frozen=True)
class Message:
    """One message as stored, returned by ``claim`` and ``get``."""

    id: int
    campaign: str
    recipient_ref: str
    recipient_ct: bytes
    part: int
    parts: int
    body: bytes
    udh: bytes
    data_coding: int
    esm_class: int
    text: str
    state: State
    provider_id: str | None
    """The provider's id, normalised; set from ``accepted`` on."""
    attempts: int
    """How many times it was claimed."""
    not_before: float
    created: float
    updated: float
    expires_at: float | None
    last_error: str | None

    def __repr__(self) -> str:
        # Never the ciphertext, and only the start of the keyed hash (module docstring).
        return (
            f"Message(id={self.id}, campaign={self.campaign!r}, "
            f"ref={self.recipient_ref[:REF_SHOWN]!r}, part={self.part}/{self.parts}, "
            f"state={self.state.value!r}, provider_id={self.provider_id!r}, "
            f"attempts={self.attempts})"
        )


@dataclass(frozen=True)
class Attempt:
    """One claim of a message and how it ended."""

    message_id: int
    number: int
    """1 for the first claim, then 2, 3..."""
    started: float
    ended: float | None
    outcome: Outcome | None
    """``None`` while the attempt is still in flight."""
    error: str | None
