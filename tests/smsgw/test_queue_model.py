"""Random sequences of SMS queue operations (hypothesis), checked against a dict model."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smsgw.errors import QueueError
from smsgw.queue import Message, Queue, State
from tests.smsgw.queuehelpers import LEGAL, NOW, RECEIPTS, new, ref

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
