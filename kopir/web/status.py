"""The status page's memory: a bounded, in-memory history of what ``kopir run`` saw (sans-IO).

Theory of operation
-------------------
The runner reports each event as it happens, with the time passed in (``now``):

- ``record_probe``: one probe round, one :class:`RelaySample` per relay (ok or the stage that
  failed, and the connect RTT);
- ``record_list``: the current list version, with how many relays it carries of those configured;
- ``record_queue``: the SMS queue's message count per state (``smsgw.Queue.counts``);
- ``record_sends``: what one worker step handed to a backend (accepted, retried, failed).

Each kind is kept in its own ``deque`` of at most ``limit`` samples, oldest dropped first, so
memory stays bounded however long the process runs; nothing is written to disk (the list, the
log and the queue already are). The derived figures the page draws are computed on demand:
the delivery rate is the growth of the ``delivered`` count between two queue samples, per
minute. Sends per backend are also summed since the start (one row per backend, so still
bounded), which is what ``/metrics`` exports as counters. A count that shrinks (a
queue file replaced) gives a rate of 0 for that step, never a negative one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proxylist import ProbeResult

DEFAULT_LIMIT = 288
MAX_LIMIT = 100_000


class StatusError(ValueError):
    """A history was asked for an impossible size."""


@dataclass(frozen=True)
class RelaySample:
    """One relay in one probe round."""

    name: str
    ok: bool
    rtt_ms: float | None
    """The best connect RTT among working ports; ``None`` when no port worked."""
    failure: str
    """The first failed stage of the first port tried (``tcp``, ``tls``...); empty when ok."""


@dataclass(frozen=True)
class ProbeRound:
    at: float
    relays: tuple[RelaySample, ...]

    @property
    def healthy(self) -> int:
        return sum(r.ok for r in self.relays)


@dataclass(frozen=True)
class ListSample:
    at: float
    version: int
    healthy: int
    """Relays in this version."""
    total: int
    """Relays configured."""


@dataclass(frozen=True)
class QueueSample:
    at: float
    counts: tuple[tuple[str, int], ...]
    """Messages per queue state, sorted by state name."""

    def count(self, state: str) -> int:
        return dict(self.counts).get(state, 0)


@dataclass(frozen=True)
class SendSample:
    at: float
    backend: str
    accepted: int
    retried: int
    failed: int


@dataclass(frozen=True)
class BackendTotals:
    """What one backend did since the history began."""

    backend: str
    accepted: int
    retried: int
    failed: int


def relay_sample(result: ProbeResult) -> RelaySample:
    failure = ""
    if not result.ok:
        stages = [p.failed_stage for p in result.ports if p.failed_stage]
        failure = str(stages[0]) if stages else "no port tried"
    return RelaySample(result.relay.name, result.ok, result.rtt_ms, failure)


class StatusHistory:
    """Bounded history of probe rounds, list versions, queue counts and backend sends."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise StatusError(f"history must keep 1-{MAX_LIMIT} samples, not {limit}")
        self.limit = limit
        self._probes: deque[ProbeRound] = deque(maxlen=limit)
        self._lists: deque[ListSample] = deque(maxlen=limit)
        self._queues: deque[QueueSample] = deque(maxlen=limit)
        self._sends: deque[SendSample] = deque(maxlen=limit)
        self._totals: dict[str, tuple[int, int, int]] = {}

    # -- recording (the runner calls these) --------------------------------------------------

    def record_probe(self, results: Sequence[ProbeResult], now: float) -> None:
        self._probes.append(ProbeRound(now, tuple(relay_sample(r) for r in results)))

    def record_list(self, version: int, healthy: int, total: int, now: float) -> None:
        self._lists.append(ListSample(now, version, healthy, total))

    def record_queue(self, counts: Mapping[str, int], now: float) -> None:
        pairs = tuple(sorted((str(state), int(n)) for state, n in counts.items()))
        self._queues.append(QueueSample(now, pairs))

    def record_sends(
        self, backend: str, accepted: int, retried: int, failed: int, now: float
    ) -> None:
        if not (accepted or retried or failed):
            return
        self._sends.append(SendSample(now, backend, accepted, retried, failed))
        a, r, f = self._totals.get(backend, (0, 0, 0))
        self._totals[backend] = (a + accepted, r + retried, f + failed)

    # -- reading (the pages call these) ------------------------------------------------------

    @property
    def probes(self) -> Sequence[ProbeRound]:
        return tuple(self._probes)

    @property
    def lists(self) -> Sequence[ListSample]:
        return tuple(self._lists)

    @property
    def queues(self) -> Sequence[QueueSample]:
        return tuple(self._queues)

    @property
    def sends(self) -> Sequence[SendSample]:
        return tuple(self._sends)

    def relay_names(self) -> list[str]:
        """Every relay seen in the rounds kept, in the order first seen."""
        return list(dict.fromkeys(r.name for p in self._probes for r in p.relays))

    def delivery_rate(self) -> list[tuple[float, float]]:
        """(time, messages delivered per minute since the previous queue sample)."""
        return _rates(self._queues, "delivered")

    def backend_totals(self) -> list[BackendTotals]:
        """What each backend did since this history began (not only the samples kept)."""
        return [BackendTotals(name, *row) for name, row in sorted(self._totals.items())]


def _rates(samples: Iterable[QueueSample], state: str) -> list[tuple[float, float]]:
    rates = []
    previous: QueueSample | None = None
    for sample in samples:
        if previous is not None and sample.at > previous.at:
            grown = max(0, sample.count(state) - previous.count(state))
            rates.append((sample.at, grown * 60.0 / (sample.at - previous.at)))
        previous = sample
    return rates
