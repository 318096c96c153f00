"""Shared by the SMS queue tests: fixed time, sample messages, and the designed moves."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from smsgw.queue import Message, NewMessage, Queue, State

NOW = 1_800_000_000.0  # fixed, so nothing depends on the clock
_refs = itertools.count()


def ref(n: int | None = None) -> str:
    """A subscriber reference as the caller makes it: a keyed hash, never the number."""
    n = next(_refs) if n is None else n
    return hashlib.sha256(b"subscriber %d" % n).hexdigest()


def new(
    recipient: str | None = None,
    *,
    campaign: str = "list-7",
    part: int = 1,
    parts: int = 1,
    expires_at: float | None = None,
) -> NewMessage:
    return NewMessage(
        campaign=campaign,
        recipient_ref=recipient if recipient is not None else ref(),
        recipient_ct=b"\x01ciphertext-of-the-number",
        part=part,
        parts=parts,
        body=b"tg://proxy?server=a&port=443&secret=ee00",
        udh=b"" if parts == 1 else bytes([5, 0, 3, 42, parts, part]),
        data_coding=0,
        esm_class=0 if parts == 1 else 0x40,
        text="tg://proxy?server=a&port=443&secret=ee00",
        expires_at=expires_at,
    )


def claim_one(q: Queue, message_id: int, now: float = NOW) -> Message:
    (claimed,) = q.claim(1, now)
    assert claimed.id == message_id, "the test set-up left another message queued"
    return claimed


def drive(q: Queue, state: State, *, via_accepted: bool = False) -> int:
    """A new message brought to ``state`` through legal moves; returns its id.

    ``via_accepted`` reaches ``failed``/``expired`` through ``accepted`` (by receipt).
    """
    expiring = state is State.EXPIRED and not via_accepted
    mid = q.enqueue(new(expires_at=NOW + 10 if expiring else None), NOW)
    if state is State.QUEUED:
        return mid
    if expiring:
        assert q.expire(NOW + 10) == 1
        return mid
    claim_one(q, mid)
    if state is State.FAILED and not via_accepted:
        q.fail(mid, "rejected", NOW)
    elif state is not State.SENDING:
        q.accepted(mid, f"P{mid}", NOW)
        receipt = {
            State.DELIVERED: lambda: q.delivered_by_provider_id(f"p{mid}", NOW),
            State.FAILED: lambda: q.failed_by_provider_id(f"p{mid}", "UNDELIV", NOW),
            State.EXPIRED: lambda: q.expired_by_provider_id(f"p{mid}", NOW),
        }.get(state)
        if receipt is not None:
            assert receipt()
    assert q.get(mid).state is state
    return mid


# Every move the design allows, and how to make it (message ids from ``drive``).
LEGAL: dict[tuple[State, State], Callable[[Queue, int], object]] = {
    (State.QUEUED, State.SENDING): lambda q, mid: claim_one(q, mid, NOW + 1),
    (State.QUEUED, State.EXPIRED): lambda q, mid: q.expire(NOW + 1e9),
    (State.SENDING, State.ACCEPTED): lambda q, mid: q.accepted(mid, "77", NOW + 1),
    (State.SENDING, State.QUEUED): lambda q, mid: q.retry(mid, "throttled", NOW + 1, 30),
    (State.SENDING, State.FAILED): lambda q, mid: q.fail(mid, "invalid dest", NOW + 1),
    (State.ACCEPTED, State.DELIVERED): lambda q, mid: q.delivered_by_provider_id(
        f"p{mid}", NOW + 1
    ),
    (State.ACCEPTED, State.FAILED): lambda q, mid: q.failed_by_provider_id(
        f"p{mid}", "UNDELIV", NOW + 1
    ),
    (State.ACCEPTED, State.EXPIRED): lambda q, mid: q.expired_by_provider_id(f"p{mid}", NOW + 1),
}

# A delivery receipt for each state one can report, by provider id.
RECEIPTS: dict[State, Callable[[Queue, str], bool]] = {
    State.DELIVERED: lambda q, pid: q.delivered_by_provider_id(pid, NOW + 1),
    State.FAILED: lambda q, pid: q.failed_by_provider_id(pid, "UNDELIV", NOW + 1),
    State.EXPIRED: lambda q, pid: q.expired_by_provider_id(pid, NOW + 1),
}
