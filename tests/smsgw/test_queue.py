"""Tests of the SMS queue (smsgw.queue): enqueue, transitions, claim, receipts, history."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smsgw.errors import QueueError
from smsgw.queue import (
    EARLY_RECEIPT_TTL,
    TRANSITIONS,
    Attempt,
    NewMessage,
    Outcome,
    Queue,
    State,
    normalize_provider_id,
)
from tests.smsgw.queuehelpers import LEGAL, NOW, RECEIPTS, claim_one, drive, new, ref


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    with Queue(tmp_path / "queue.db") as q:
        yield q


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

# LEGAL and RECEIPTS are in queuehelpers: the random-operations model uses them too.


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
    masked = "The 'To' number [number] is not valid (21211)"
    assert queue.get(mid).last_error == masked
    assert queue.attempts(mid)[0].error == masked
    claim_one(queue, mid, NOW + 1)
    queue.fail(mid, "x" * 10_000, NOW + 1)
    assert queue.get(mid).last_error == "x" * 500
