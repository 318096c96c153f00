"""Tests of the durable SMS queue (smsgw.queue): transitions, idempotency, crash recovery."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smsgw.errors import QueueError
from smsgw.queue import (
    EARLY_RECEIPT_TTL,
    SCHEMA_VERSION,
    TRANSITIONS,
    Attempt,
    Message,
    NewMessage,
    Outcome,
    Queue,
    State,
    normalize_provider_id,
)

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    with Queue(tmp_path / "queue.db") as q:
        yield q


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


# --- enqueue -------------------------------------------------------------------------------------


def test_enqueue_stores_every_field(queue: Queue) -> None:
    m = new(part=2, parts=3, expires_at=NOW + 3600)
    stored = queue.get(queue.enqueue(m, NOW))
    assert (stored.campaign, stored.recipient_ref, stored.recipient_ct) == (
        m.campaign,
        m.recipient_ref,
        m.recipient_ct,
    )
    assert (stored.part, stored.parts, stored.body, stored.udh) == (2, 3, m.body, m.udh)
    assert (stored.data_coding, stored.esm_class, stored.text) == (0, 0x40, m.text)
    assert stored.state is State.QUEUED
    assert (stored.provider_id, stored.attempts, stored.last_error) == (None, 0, None)
    assert (stored.not_before, stored.created, stored.updated) == (NOW, NOW, NOW)
    assert stored.expires_at == NOW + 3600


def test_enqueue_of_an_existing_key_returns_its_id_and_changes_nothing(queue: Queue) -> None:
    first = new()
    mid = queue.enqueue(first, NOW)
    again = NewMessage(**{**vars(first), "body": b"other", "text": "other"})
    assert queue.enqueue(again, NOW + 50) == mid
    stored = queue.get(mid)
    assert (stored.body, stored.text, stored.created) == (first.body, first.text, NOW)
    assert queue.counts()[State.QUEUED] == 1
    # Another part or another campaign is another message.
    assert queue.enqueue(new(first.recipient_ref, part=2, parts=2), NOW) != mid
    assert queue.enqueue(new(first.recipient_ref, campaign="list-8"), NOW) != mid


def test_enqueue_of_an_existing_key_does_not_requeue_a_sent_message(queue: Queue) -> None:
    mid = drive(queue, State.DELIVERED)
    assert queue.enqueue(new(queue.get(mid).recipient_ref), NOW + 5) == mid
    assert queue.get(mid).state is State.DELIVERED


def test_enqueue_many_counts_added_and_skipped(queue: Queue) -> None:
    batch = [new(ref(n)) for n in range(10)]
    assert queue.enqueue_many(batch, NOW) == (10, 0)
    repeat_in_batch = [new(ref(n)) for n in (20, 21, 20)]
    assert queue.enqueue_many(batch[:4] + repeat_in_batch, NOW) == (2, 5)
    assert queue.counts()[State.QUEUED] == 12
    assert queue.enqueue_many([], NOW) == (0, 0)


def test_enqueue_many_is_one_transaction(queue: Queue) -> None:
    def batch() -> Iterator[NewMessage]:
        yield new()
        yield new()
        raise RuntimeError("the subscriber store went away")

    with pytest.raises(RuntimeError):
        queue.enqueue_many(batch(), NOW)
    assert sum(queue.counts().values()) == 0
    assert queue.enqueue_many([new()], NOW) == (1, 0)  # and the queue is usable afterwards


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"campaign": ""}, "must not be empty"),
        ({"recipient_ref": ""}, "must not be empty"),
        ({"recipient_ref": "+77011234567"}, "looks like a phone number"),
        ({"recipient_ref": "8 701 123 45 67"}, "looks like a phone number"),
        ({"part": 0}, "part 0 of 1"),
        ({"part": 3, "parts": 2}, "part 3 of 2"),
        ({"parts": 256, "part": 1}, "part 1 of 256"),
        ({"data_coding": 256}, "one byte"),
        ({"esm_class": -1}, "one byte"),
    ],
)
def test_new_message_rejects_bad_values(changes: dict[str, object], complaint: str) -> None:
    with pytest.raises(QueueError, match=complaint):
        NewMessage(**{**vars(new()), **changes})


# --- transitions ---------------------------------------------------------------------------------

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


def test_the_legal_moves_are_exactly_the_designed_ones() -> None:
    designed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert designed == set(LEGAL)


@pytest.mark.parametrize(("source", "target"), list(LEGAL), ids=lambda s: str(s))
def test_every_legal_move(queue: Queue, source: State, target: State) -> None:
    expiring = (source, target) == (State.QUEUED, State.EXPIRED)
    mid = queue.enqueue(new(expires_at=NOW + 5), NOW) if expiring else drive(queue, source)
    LEGAL[source, target](queue, mid)
    moved = queue.get(mid)
    assert moved.state is target
    assert moved.updated == NOW + (1e9 if expiring else 1)


BY_ID: dict[str, tuple[State, Callable[[Queue, int], object]]] = {
    "accepted": (State.ACCEPTED, lambda q, mid: q.accepted(mid, "99", NOW + 1)),
    "retry": (State.QUEUED, lambda q, mid: q.retry(mid, "again", NOW + 1, 5)),
    "fail": (State.FAILED, lambda q, mid: q.fail(mid, "gone", NOW + 1)),
}
ILLEGAL_BY_ID = [
    (source, op, via)
    for source in State
    for via in ((False, True) if source in (State.FAILED, State.EXPIRED) else (False,))
    for op, (target, _) in BY_ID.items()
    if (source, target) not in LEGAL
]


@pytest.mark.parametrize(("source", "op", "via_accepted"), ILLEGAL_BY_ID)
def test_every_illegal_move_by_id(queue: Queue, source: State, op: str, via_accepted: bool) -> None:
    mid = drive(queue, source, via_accepted=via_accepted)
    before, history = queue.get(mid), queue.attempts(mid)
    target, move = BY_ID[op]
    with pytest.raises(QueueError, match=rf"message {mid} cannot go from {source} to {target}"):
        move(queue, mid)
    assert (queue.get(mid), queue.attempts(mid)) == (before, history)


RECEIPTS: dict[State, Callable[[Queue, str], bool]] = {
    State.DELIVERED: lambda q, pid: q.delivered_by_provider_id(pid, NOW + 1),
    State.FAILED: lambda q, pid: q.failed_by_provider_id(pid, "UNDELIV", NOW + 1),
    State.EXPIRED: lambda q, pid: q.expired_by_provider_id(pid, NOW + 1),
}


@pytest.mark.parametrize("target", list(RECEIPTS))
@pytest.mark.parametrize("source", [State.DELIVERED, State.FAILED, State.EXPIRED])
def test_a_receipt_for_a_settled_message_is_illegal_unless_a_repeat(
    queue: Queue, source: State, target: State
) -> None:
    mid = drive(queue, source, via_accepted=True)
    if source is target:  # SMSCs resend receipts: the same news twice changes nothing
        assert RECEIPTS[target](queue, f"P{mid}") is False
    else:
        with pytest.raises(QueueError, match=rf"message {mid} cannot go from {source} to {target}"):
            RECEIPTS[target](queue, f"P{mid}")
    assert queue.get(mid).state is source


@pytest.mark.parametrize("source", [s for s in State if s is not State.QUEUED])
def test_claim_and_expire_touch_only_queued_messages(queue: Queue, source: State) -> None:
    mid = drive(queue, source)
    before = queue.get(mid)
    assert queue.claim(10, NOW + 1e9) == []
    assert queue.expire(NOW + 1e9) == 0
    assert queue.get(mid) == before


def test_unknown_message_ids_are_errors(queue: Queue) -> None:
    for move in (
        lambda: queue.accepted(41, "1", NOW),
        lambda: queue.retry(41, "x", NOW, 1),
        lambda: queue.fail(41, "x", NOW),
        lambda: queue.get(41),
    ):
        with pytest.raises(QueueError, match="no message 41"):
            move()


def test_bad_arguments_are_errors(queue: Queue) -> None:
    mid = drive(queue, State.SENDING)
    with pytest.raises(QueueError, match="provider id is empty"):
        queue.accepted(mid, "  ", NOW)
    with pytest.raises(QueueError, match="delay must not be negative"):
        queue.retry(mid, "x", NOW, -1)
    with pytest.raises(QueueError, match="limit must not be negative"):
        queue.claim(-1, NOW)
    assert queue.get(mid).state is State.SENDING


# --- claim ---------------------------------------------------------------------------------------


def test_claim_takes_the_oldest_first_up_to_the_limit(queue: Queue) -> None:
    ids = [queue.enqueue(new(), NOW + t) for t in (5, 1, 3)]  # created out of id order
    queue.enqueue_many([new() for _ in range(3)], NOW + 2)
    assert queue.claim(0, NOW + 10) == []
    first = queue.claim(3, NOW + 10)
    assert [m.created for m in first] == [NOW + 1, NOW + 2, NOW + 2]
    assert first[0].id == ids[1]
    rest = queue.claim(10, NOW + 10)
    assert [m.created for m in rest] == [NOW + 2, NOW + 3, NOW + 5]
    assert [m.id for m in rest][1:] == [ids[2], ids[0]]
    assert all(m.state is State.SENDING and m.attempts == 1 for m in first + rest)
    assert queue.claim(10, NOW + 10) == []


def test_claim_waits_for_not_before(queue: Queue) -> None:
    assert queue.claim(1, NOW - 1) == []  # enqueued at NOW: not due before
    old = queue.enqueue(new(), NOW)
    claim_one(queue, old)
    queue.retry(old, "throttled (0x58)", NOW + 10, 30)
    newer = queue.enqueue(new(), NOW + 20)
    assert [m.id for m in queue.claim(5, NOW + 39)] == [newer]
    again = queue.claim(5, NOW + 40)
    assert [m.id for m in again] == [old]
    assert again[0].attempts == 2
    assert again[0].last_error == "throttled (0x58)"


def test_claim_skips_messages_past_their_expiry(queue: Queue) -> None:
    stale = queue.enqueue(new(expires_at=NOW + 60), NOW)
    fresh = queue.enqueue(new(expires_at=NOW + 600), NOW)
    assert [m.id for m in queue.claim(5, NOW + 60)] == [fresh]
    assert queue.get(stale).state is State.QUEUED
    assert queue.expire(NOW + 60) == 1
    assert queue.get(stale).state is State.EXPIRED


def test_expire_moves_only_queued_messages_past_their_expiry(queue: Queue) -> None:
    never = queue.enqueue(new(), NOW)
    later = queue.enqueue(new(expires_at=NOW + 100), NOW)
    soon = queue.enqueue(new(expires_at=NOW + 10), NOW)
    assert queue.expire(NOW + 9) == 0
    assert queue.expire(NOW + 10) == 1
    assert [queue.get(i).state for i in (never, later, soon)] == [
        State.QUEUED,
        State.QUEUED,
        State.EXPIRED,
    ]
    in_flight = queue.claim(5, NOW + 20)
    assert {m.id for m in in_flight} == {never, later}
    assert queue.expire(NOW + 1000) == 0  # sending is in the provider's hands, not ours


# --- recovery ------------------------------------------------------------------------------------


def test_recover_requeues_only_sending_messages(queue: Queue) -> None:
    states = [s for s in State if s is not State.QUEUED] + [State.QUEUED]  # queued last: claims
    second_sending = drive(queue, State.SENDING)
    ids = {state: drive(queue, state) for state in states}
    before = {mid: queue.get(mid) for mid in ids.values()}
    assert queue.recover(NOW + 7) == 2
    for state, mid in ids.items():
        if state is State.SENDING:
            assert queue.get(mid).state is State.QUEUED
        else:
            assert queue.get(mid) == before[mid]
    assert queue.get(second_sending).state is State.QUEUED
    last = queue.attempts(ids[State.SENDING])[-1]
    assert (last.outcome, last.ended) == (Outcome.INTERRUPTED, NOW + 7)
    assert queue.recover(NOW + 8) == 0
    assert {m.id for m in queue.claim(5, NOW + 8)} == {
        ids[State.SENDING],
        second_sending,
        ids[State.QUEUED],
    }


# --- receipts and provider ids -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("0A1B", "a1b"),
        ("a1b", "a1b"),
        ("000123", "123"),
        (" 123\n", "123"),
        ("0000", "0"),
        ("SM0123abc", "sm0123abc"),  # not pure hex: zeros kept
        ("0b2f-0001-XY", "0b2f-0001-xy"),
        ("", ""),
    ],
)
def test_normalize_provider_id(given: str, normal: str) -> None:
    assert normalize_provider_id(given) == normal


@pytest.mark.parametrize(
    ("submit_resp", "receipt"),
    [("0A1B", "a1b"), ("a1b", "0A1B"), ("000123", "123"), ("123", " 00000123 "), ("Ab-C", "aB-c")],
)
def test_receipts_match_differently_spelled_ids(
    queue: Queue, submit_resp: str, receipt: str
) -> None:
    mid = drive(queue, State.SENDING)
    queue.accepted(mid, submit_resp, NOW)
    assert queue.get(mid).provider_id == normalize_provider_id(submit_resp)
    assert queue.delivered_by_provider_id(receipt, NOW + 1)
    assert queue.get(mid).state is State.DELIVERED


def test_a_failed_receipt_records_its_error(queue: Queue) -> None:
    mid = drive(queue, State.ACCEPTED)
    assert queue.failed_by_provider_id(f"P{mid}", "stat:UNDELIV err:001", NOW + 1)
    failed = queue.get(mid)
    assert (failed.state, failed.last_error) == (State.FAILED, "stat:UNDELIV err:001")
    assert failed.provider_id == f"p{mid}"


def test_receipts_for_unknown_ids_return_false(queue: Queue) -> None:
    mid = drive(queue, State.ACCEPTED)
    assert not queue.delivered_by_provider_id("nope", NOW)
    assert not queue.failed_by_provider_id("", "x", NOW)
    assert not queue.expired_by_provider_id("0", NOW)
    assert queue.get(mid).state is State.ACCEPTED


def test_a_reused_provider_id_settles_the_message_still_waiting(queue: Queue) -> None:
    old = drive(queue, State.SENDING)
    queue.accepted(old, "42", NOW)
    assert queue.delivered_by_provider_id("42", NOW + 1)
    new_id = drive(queue, State.SENDING)
    queue.accepted(new_id, "042", NOW + 2)
    assert queue.delivered_by_provider_id("42", NOW + 3)
    assert queue.get(new_id).state is State.DELIVERED


def test_a_receipt_that_beats_the_acceptance_settles_the_message_once_accepted(
    queue: Queue,
) -> None:
    delivered, failed = drive(queue, State.SENDING), drive(queue, State.SENDING)
    # An SMSC answers submit_sm and sends the receipt at once; the worker records later.
    assert queue.delivered_by_provider_id("00A1", NOW + 1) is False
    assert queue.failed_by_provider_id("b2", "stat:UNDELIV err:0B", NOW + 1) is False
    queue.accepted(delivered, "a1", NOW + 2)
    queue.accepted(failed, "0B2", NOW + 2)
    assert queue.get(delivered).state is State.DELIVERED
    late = queue.get(failed)
    assert (late.state, late.last_error, late.provider_id) == (
        State.FAILED, "stat:UNDELIV err:0B", "b2"
    )  # fmt: skip
    assert [a.outcome for a in queue.attempts(delivered)] == [Outcome.ACCEPTED]
    again = drive(queue, State.SENDING)  # the provider reuses the id: the receipt was used up
    queue.accepted(again, "a1", NOW + 3)
    assert queue.get(again).state is State.ACCEPTED


def test_a_kept_receipt_older_than_the_claim_is_not_this_messages(queue: Queue) -> None:
    assert queue.delivered_by_provider_id("77", NOW - 1) is False
    mid = drive(queue, State.SENDING)  # claimed at NOW, after that receipt came
    queue.accepted(mid, "77", NOW + 1)
    assert queue.get(mid).state is State.ACCEPTED


def test_kept_receipts_are_forgotten_after_their_time(queue: Queue) -> None:
    mid = drive(queue, State.SENDING)
    assert queue.delivered_by_provider_id("5", NOW + 1) is False
    assert queue.delivered_by_provider_id("6", NOW + 2 + EARLY_RECEIPT_TTL) is False
    queue.accepted(mid, "5", NOW + 3 + EARLY_RECEIPT_TTL)
    assert queue.get(mid).state is State.ACCEPTED


# --- history and reports -------------------------------------------------------------------------


def test_attempt_history(queue: Queue) -> None:
    mid = queue.enqueue(new(), NOW)
    claim_one(queue, mid, NOW + 1)
    assert queue.attempts(mid) == [Attempt(mid, 1, NOW + 1, None, None, None)]
    queue.retry(mid, "throttled", NOW + 2, 10)
    claim_one(queue, mid, NOW + 12)
    queue.recover(NOW + 13)
    claim_one(queue, mid, NOW + 14)
    queue.accepted(mid, "9", NOW + 15)
    assert queue.attempts(mid) == [
        Attempt(mid, 1, NOW + 1, NOW + 2, Outcome.RETRY, "throttled"),
        Attempt(mid, 2, NOW + 12, NOW + 13, Outcome.INTERRUPTED, None),
        Attempt(mid, 3, NOW + 14, NOW + 15, Outcome.ACCEPTED, None),
    ]
    assert queue.get(mid).attempts == 3
    assert queue.delivered_by_provider_id("9", NOW + 16)
    assert len(queue.attempts(mid)) == 3  # a receipt is not an attempt
    other = drive(queue, State.FAILED)
    assert [(a.outcome, a.error) for a in queue.attempts(other)] == [(Outcome.FAILED, "rejected")]
    assert queue.attempts(12345) == []


def test_counts_by_state_and_campaign(queue: Queue) -> None:
    assert queue.counts() == dict.fromkeys(State, 0)
    assert queue.counts_by_campaign() == {}
    assert queue.pending() == 0
    for state in (State.SENDING, State.ACCEPTED, State.DELIVERED, State.FAILED, State.EXPIRED):
        drive(queue, state)
    queue.enqueue_many([new(), new(), new(campaign="help-kk")], NOW)
    counts = queue.counts()
    assert counts == {
        State.QUEUED: 3,
        State.SENDING: 1,
        State.ACCEPTED: 1,
        State.DELIVERED: 1,
        State.FAILED: 1,
        State.EXPIRED: 1,
    }
    assert queue.pending() == 4
    by_campaign = queue.counts_by_campaign()
    assert set(by_campaign) == {"list-7", "help-kk"}
    assert by_campaign["help-kk"] == {**dict.fromkeys(State, 0), State.QUEUED: 1}
    assert by_campaign["list-7"] == {**counts, State.QUEUED: 2}


# --- privacy -------------------------------------------------------------------------------------


def test_reprs_show_neither_ciphertext_nor_the_whole_reference(queue: Queue) -> None:
    m = new()
    claimed = claim_one(queue, queue.enqueue(m, NOW))
    for text in (repr(m), repr(claimed), str(claimed)):
        assert "ciphertext" not in text and "\\x01" not in text
        assert m.recipient_ref not in text
        assert m.recipient_ref[:12] in text


def test_logs_show_only_the_start_of_the_reference(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="smsgw.queue")
    a, b = drive(queue, State.SENDING), drive(queue, State.SENDING)
    queue.retry(a, "throttled", NOW, 5)
    queue.fail(b, "invalid destination", NOW)
    drive(queue, State.SENDING)
    queue.recover(NOW)
    queue.expire(NOW)
    assert caplog.records
    for mid in (a, b):
        full = queue.get(mid).recipient_ref
        assert full not in caplog.text
        assert full[:12] in caplog.text
    assert "ciphertext" not in caplog.text


def test_numbers_in_provider_errors_are_masked(queue: Queue) -> None:
    mid = drive(queue, State.SENDING)
    queue.retry(mid, "The 'To' number +7 701 123-45-67 is not valid (21211)", NOW, 1)
    masked = "The 'To' number <digits> is not valid (21211)"
    assert queue.get(mid).last_error == masked
    assert queue.attempts(mid)[0].error == masked
    claim_one(queue, mid, NOW + 1)
    queue.fail(mid, "x" * 10_000, NOW + 1)
    assert queue.get(mid).last_error == "x" * 500


# --- opening and sharing the file ----------------------------------------------------------------


def test_the_file_is_in_wal_mode_and_a_second_opener_sees_the_same_queue(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with Queue(path) as worker, Queue(path) as cli:
        mid = worker.enqueue(new(), NOW)
        assert cli.counts()[State.QUEUED] == 1
        claimed = cli.claim(5, NOW)
        assert [m.id for m in claimed] == [mid]
        assert worker.claim(5, NOW) == []  # the claim is visible to the other connection
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with Queue(path) as reopened:
        assert reopened.get(mid).state is State.SENDING


def test_opening_garbage_says_it_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 100)
    with pytest.raises(QueueError, match="not an SQLite database") as caught:
        Queue(path)
    assert str(path) in str(caught.value)


def test_opening_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE t (x)")
    raw.close()
    with pytest.raises(QueueError, match="not a kopir SMS queue"):
        Queue(path)


def test_a_version_1_file_gains_the_early_receipt_table(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with Queue(path) as q:
        mid = drive(q, State.SENDING)
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE early_receipt")
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    with Queue(path) as q:
        assert q.delivered_by_provider_id("9", NOW + 1) is False
        q.accepted(mid, "9", NOW + 2)
        assert q.get(mid).state is State.DELIVERED
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw.close()


def test_opening_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    Queue(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(QueueError, match="schema version 99.*upgrade kopir"):
        Queue(path)


def test_opening_in_a_missing_directory_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="does not exist; create it"):
        Queue(tmp_path / "no" / "queue.db")
    with pytest.raises(QueueError, match="names a file") as caught:
        Queue(tmp_path)
    assert str(tmp_path) in str(caught.value)


_PERMISSION_CHECK = """
import sys
from pathlib import Path
from smsgw.errors import QueueError
from smsgw.queue import Queue

folder = Path(sys.argv[1])
path = folder / "queue.db"
Queue(path).close()
path.chmod(0o444)
try:
    Queue(path)
    raise SystemExit("opened a read-only queue")
except QueueError as exc:
    assert "may not read and write it; fix its owner or mode" in str(exc), exc
path.chmod(0o644)
folder.chmod(0o555)
try:
    Queue(path)
    raise SystemExit("opened a queue in a read-only folder")
except QueueError as exc:
    assert "may not create files in" in str(exc) and str(path) in str(exc), exc
finally:
    folder.chmod(0o755)
Queue(path).close()
print("ok")
"""
# Root ignores file modes through these two capabilities; drop them so root is checked too.
_NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
           "--bounding-set=-dac_override,-dac_read_search"]  # fmt: skip


def test_opening_without_permission_says_what_to_fix(tmp_path: Path) -> None:
    prefix = _NO_DAC if os.geteuid() == 0 else []
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _PERMISSION_CHECK, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --- a worker killed with SIGKILL ----------------------------------------------------------------

WORKER = r"""
import os, sys, time
from smsgw.queue import Queue

path, sent, window, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
now = 1_800_000_000.0
fd = os.open(sent, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
with Queue(path) as q:
    while batch := q.claim(window, now):
        for m in batch:
            os.write(fd, b"%d\n" % m.id)  # the fake "send": the provider has it now
            time.sleep(pause)
            q.accepted(m.id, "%X" % (m.id * 7919), now)
"""
TOTAL = 2000
WINDOW = 20


def start_worker(db: Path, sent: Path, pause: float) -> subprocess.Popen[bytes]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(db), str(sent), str(WINDOW), str(pause)],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def sent_ids(sent: Path) -> list[int]:
    return [int(line) for line in sent.read_text().split()] if sent.exists() else []


def in_flight_and_sent(observer: Queue, sent: Path) -> set[int]:
    """Ids the (stopped) worker sent but has not recorded as accepted."""
    return {m.id for m in map(observer.get, set(sent_ids(sent))) if m.state is State.SENDING}


def stop_mid_flight(worker: subprocess.Popen[bytes], observer: Queue, sent: Path) -> None:
    """Freeze the worker at a moment it has sent a message it has not recorded, then kill it.

    SIGSTOP only picks the moment; the kill is SIGKILL, wherever the worker was (even inside
    a commit), and the test reads the state after it from a fresh connection.
    """
    deadline = time.monotonic() + 60
    try:
        while len(sent_ids(sent)) < TOTAL // 3:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert sum(observer.counts().values()) == TOTAL  # the CLI's view, worker running
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while True:
            worker.send_signal(signal.SIGSTOP)
            if in_flight_and_sent(observer, sent):
                break
            worker.send_signal(signal.SIGCONT)
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.003)
    finally:
        worker.kill()  # SIGKILL
        assert worker.wait(10) == -signal.SIGKILL
        if worker.stderr:
            worker.stderr.close()


def test_a_killed_worker_resends_at_most_its_window(tmp_path: Path) -> None:
    db, sent = tmp_path / "queue.db", tmp_path / "sent"
    with Queue(db) as observer:
        observer.enqueue_many((new(ref(n)) for n in range(TOTAL)), NOW)
        stop_mid_flight(start_worker(db, sent, pause=0.001), observer, sent)

    with Queue(db) as q:  # a fresh start after the crash
        counts = q.counts()
        assert 0 < counts[State.ACCEPTED] < TOTAL
        sending = {m.id for m in map(q.get, range(1, TOTAL + 1)) if m.state is State.SENDING}
        assert 1 <= len(sending) <= WINDOW
        sent_before = set(sent_ids(sent))
        assert q.recover(NOW + 1) == len(sending)

        second = start_worker(db, sent, pause=0)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()

        assert q.counts() == {**dict.fromkeys(State, 0), State.ACCEPTED: TOTAL}
        times_sent = Counter(sent_ids(sent))
        assert set(times_sent) == set(range(1, TOTAL + 1))
        twice = {mid for mid, n in times_sent.items() if n > 1}
        assert max(times_sent.values()) == 2
        assert twice == sending & sent_before
        assert 1 <= len(twice) <= WINDOW
        for mid in sending:
            assert [a.outcome for a in q.attempts(mid)] == [Outcome.INTERRUPTED, Outcome.ACCEPTED]
    print(f"\nkilled worker: {len(sending)} in flight, {len(twice)} sent twice (window {WINDOW})")


def test_two_workers_at_once_never_claim_the_same_message(tmp_path: Path) -> None:
    db, sent = tmp_path / "queue.db", tmp_path / "sent"
    with Queue(db) as q:
        q.enqueue_many((new(ref(n)) for n in range(TOTAL)), NOW)
        workers = [start_worker(db, sent, pause=0.0002) for _ in range(2)]
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err.decode()  # no "database is locked" either
        assert q.counts()[State.ACCEPTED] == TOTAL
    assert sorted(sent_ids(sent)) == list(range(1, TOTAL + 1))


# --- random sequences of operations --------------------------------------------------------------


class QueueMachine(RuleBasedStateMachine):
    """Drives a real queue and a dict model side by side; every move must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="kopir-queue-")
        self.q = Queue(Path(self.dir) / "queue.db")
        self.now = NOW
        self.state: dict[int, State] = {}
        self.keys: dict[tuple[str, str, int], int] = {}
        self.created: dict[int, float] = {}
        self.not_before: dict[int, float] = {}
        self.expires: dict[int, float | None] = {}
        self.provider: dict[int, int] = {}
        self.pids = itertools.count(1)

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pick(self, n: int) -> int:
        return sorted(self.state)[n % len(self.state)] if self.state else 1

    @rule(
        campaign=st.sampled_from(["a", "b"]),
        who=st.integers(0, 4),
        part=st.integers(1, 2),
        ttl=st.none() | st.floats(0, 100),
    )
    def enqueue(self, campaign: str, who: int, part: int, ttl: float | None) -> None:
        key = (campaign, ref(who), part)
        expires = None if ttl is None else self.now + ttl
        mid = self.q.enqueue(
            new(key[1], campaign=campaign, part=part, parts=2, expires_at=expires), self.now
        )
        if key in self.keys:
            assert mid == self.keys[key]
            return
        assert mid not in self.state
        self.keys[key] = mid
        self.state[mid], self.created[mid], self.not_before[mid] = State.QUEUED, self.now, self.now
        self.expires[mid] = expires

    @rule(limit=st.integers(0, 4))
    def claim(self, limit: int) -> None:
        due = [
            mid
            for mid, s in self.state.items()
            if s is State.QUEUED
            and self.not_before[mid] <= self.now
            and (self.expires[mid] is None or self.expires[mid] > self.now)  # type: ignore[operator]
        ]
        expected = sorted(due, key=lambda mid: (self.created[mid], mid))[:limit]
        assert [m.id for m in self.q.claim(limit, self.now)] == expected
        for mid in expected:
            self.state[mid] = State.SENDING

    def _move(self, mid: int, target: State, move: Callable[[], object]) -> bool:
        legal = mid in self.state and (self.state[mid], target) in LEGAL  # the design
        if legal:
            move()
            self.state[mid] = target
        else:
            with pytest.raises(QueueError, match=rf"message {mid} |no message {mid}"):
                move()
        return legal

    @rule(n=st.integers(0, 100))
    def accept(self, n: int) -> None:
        mid, pid = self.pick(n), next(self.pids)
        if self._move(mid, State.ACCEPTED, lambda: self.q.accepted(mid, f"{pid:06X}", self.now)):
            self.provider[mid] = pid

    @rule(n=st.integers(0, 100), delay=st.floats(0, 50))
    def retry(self, n: int, delay: float) -> None:
        mid = self.pick(n)
        if self._move(mid, State.QUEUED, lambda: self.q.retry(mid, "busy", self.now, delay)):
            self.not_before[mid] = self.now + delay

    @rule(n=st.integers(0, 100))
    def fail(self, n: int) -> None:
        mid = self.pick(n)
        self._move(mid, State.FAILED, lambda: self.q.fail(mid, "no", self.now))

    @rule(n=st.integers(0, 100), kind=st.sampled_from(list(RECEIPTS)), spelling=st.integers(0, 2))
    def receipt(self, n: int, kind: State, spelling: int) -> None:
        mid = self.pick(n)
        if mid not in self.provider:
            assert not RECEIPTS[kind](self.q, "ffff" + "0" * 9)  # never issued
            return
        pid = self.provider[mid]
        spelled = [f"{pid:x}", f"  000{pid:X} ", f"{pid:08x}"][spelling]
        if self.state.get(mid) is kind:  # a resent receipt: no change, no error
            assert RECEIPTS[kind](self.q, spelled) is False
            return
        self._move(mid, kind, lambda: RECEIPTS[kind](self.q, spelled))

    @rule()
    def expire(self) -> None:
        gone = [
            mid
            for mid, s in self.state.items()
            if s is State.QUEUED and self.expires[mid] is not None and self.expires[mid] <= self.now  # type: ignore[operator]
        ]
        assert self.q.expire(self.now) == len(gone)
        for mid in gone:
            self.state[mid] = State.EXPIRED

    @rule()
    def recover(self) -> None:
        flying = [mid for mid, s in self.state.items() if s is State.SENDING]
        assert self.q.recover(self.now) == len(flying)
        for mid in flying:
            self.state[mid] = State.QUEUED

    @rule(dt=st.floats(0, 40))
    def tick(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def every_message_is_in_exactly_the_modelled_state(self) -> None:
        counts = self.q.counts()
        assert sum(counts.values()) == len(self.state)
        assert counts == {**dict.fromkeys(State, 0), **Counter(self.state.values())}
        assert self.q.pending() == counts[State.QUEUED] + counts[State.SENDING]
        by_campaign = self.q.counts_by_campaign()
        assert sum(sum(c.values()) for c in by_campaign.values()) == len(self.state)
        for mid, state in self.state.items():
            self.check_message(self.q.get(mid), state)

    def check_message(self, m: Message, state: State) -> None:
        assert m.state is state
        if state in (State.ACCEPTED, State.DELIVERED) or m.id in self.provider:
            assert m.provider_id == f"{self.provider[m.id]:x}"
        else:
            assert m.provider_id is None
        history = self.q.attempts(m.id)
        assert len(history) == m.attempts
        assert [a.number for a in history] == list(range(1, m.attempts + 1))
        assert all(a.outcome is not None for a in history[:-1])
        if history:
            assert (history[-1].outcome is None) == (state is State.SENDING)


QueueMachine.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_operations_keep_the_invariants = QueueMachine.TestCase


# --- timings (printed, never asserted) -----------------------------------------------------------


@pytest.mark.slow
def test_timings(tmp_path: Path) -> None:
    batch = [new(ref(n)) for n in range(100_000)]
    with Queue(tmp_path / "queue.db") as q:
        start = time.perf_counter()
        assert q.enqueue_many(batch, NOW) == (100_000, 0)
        added = time.perf_counter() - start
        start = time.perf_counter()
        assert q.enqueue_many(batch, NOW) == (0, 100_000)
        skipped = time.perf_counter() - start
        start = time.perf_counter()
        done = 0
        while done < 20_000:
            for m in q.claim(100, NOW):
                q.accepted(m.id, str(m.id), NOW)
                done += 1
        sending = time.perf_counter() - start
    print(
        f"\nenqueue_many 100,000 new: {added:.2f} s; 100,000 existing: {skipped:.2f} s;"
        f" claim(100)+accepted: {done / sending:,.0f} messages/s"
    )
