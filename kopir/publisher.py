"""The publisher half of ``kopir run``: probe, build, sign, log, and send each subscriber its
own signed links.

Theory of operation
-------------------
One :meth:`Publisher.round` probes every ``[publisher]`` relay, then ``proxylist.publish``
makes list version N+1 if the healthy set changed (or the list nears expiry), signs it with the
online key when there is one, and appends it to the log. When the current version or the
distribution epoch differs from the last one distributed, every subscriber is given their own
``k`` relays by the keyed ring (``proxylist.Distributor``, by pool), one signed link per relay
(``proxylist.LinkBook``), each queued as one SMS under the campaign
``list-v<N>-e<epoch>-<i>``. The queue's idempotency key (campaign, recipient, part) makes a
repeated round queue nothing twice, and ``<data>/publisher.json`` remembers what was
distributed, so a restart does not send again. The SMS worker sends what is queued.

File and SQLite work runs in a thread (``asyncio.to_thread``) so the relay in the same event
loop never waits on the disk; each thread opens and closes its own SQLite connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import signing
import smsgw
from kopir.config import Config
from kopir.distcmd import healthy_relays, link_book, open_distributor
from kopir.listcmd import list_policy, publisher_relays
from kopir.smscmd import subscriber_store
from proxylist import ListStore, ProbeResult, Published, epoch_of, probe_relays, publish
from proxylist.errors import BuildError, DistributionError
from signing import strictjson
from signing.fileio import read_bytes, write_atomic
from smsgw.compose import link_message
from smsgw.segment import Segmentation

log = logging.getLogger("kopir.publisher")
STATE_FILE = "publisher.json"
STATE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class RoundReport:
    """What one round did."""

    results: tuple[ProbeResult, ...]
    published: Published | None
    """None when no list could be made (no healthy relay): the old version stays."""
    error: str = ""
    distributed: int = 0
    """SMS parts queued for subscribers this round."""
    recipients: int = 0


class Publisher:
    def __init__(
        self,
        config: Config,
        *,
        key: signing.SecretKey | None,
        log_store: signing.LogStore | None,
        number_key: smsgw.NumberKey,
        on_round: Callable[[RoundReport, float], None] | None = None,
    ) -> None:
        self.config = config
        self.relays = publisher_relays(config)
        self.policy = list_policy(config)
        self.store = ListStore(config.in_data(config.publisher.dir))
        self.key, self.log_store, self.number_key = key, log_store, number_key
        self.on_round = on_round
        self.state_path = config.in_data(Path(STATE_FILE))

    async def round(self, now: float) -> RoundReport:
        pub = self.config.publisher
        results = tuple(
            await probe_relays(
                self.relays, timeout=pub.probe_timeout, concurrency=pub.probe_concurrency
            )
        )
        try:
            done = await asyncio.to_thread(
                publish, self.store, self.relays, results, self.policy, now,
                key=self.key, log=self.log_store,
            )  # fmt: skip
        except BuildError as exc:
            report = RoundReport(results, None, str(exc))
        else:
            report = RoundReport(results, done)
            report = await asyncio.to_thread(self._distribute_if_due, report, now)
        _say_round(report)
        if self.on_round is not None:
            self.on_round(report, now)
        return report

    async def loop(self, stop: asyncio.Event, after_round: Callable[[], None]) -> None:
        """Rounds every ``[publisher] probe_interval`` until ``stop`` is set."""
        while not stop.is_set():
            await self.round(time.time())
            after_round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.publisher.probe_interval)

    # -- distribution -------------------------------------------------------------------------

    def _distribute_if_due(self, report: RoundReport, now: float) -> RoundReport:
        assert report.published is not None
        version = report.published.build.document.version
        epoch = epoch_of(now, self.config.distribution.epoch)
        if self.key is None or self._last() == [version, epoch]:
            return report
        parts, people = self._distribute(version, epoch, now)
        write_atomic(self.state_path, json.dumps({"version": version, "epoch": epoch}).encode())
        return RoundReport(report.results, report.published, "", parts, people)

    def _last(self) -> list[int] | None:
        """``[version, epoch]`` last distributed; None if nothing was or the record is damaged
        (then this round distributes again: the queue's idempotency keys queue nothing twice)."""
        if not self.state_path.exists():
            return None
        try:
            return _parse_state(read_bytes(self.state_path, "publisher state", STATE_LIMIT))
        except signing.FormatError as exc:
            log.warning(
                "publisher state %s is damaged (%s); distributing again", self.state_path, exc
            )
        except signing.SigningError as exc:  # cannot read it
            log.warning("%s; distributing again", exc)
        return None

    def _distribute(self, version: int, epoch: int, now: float) -> tuple[int, int]:
        """Queue every subscriber's links; returns (parts queued, subscribers reached)."""
        assert self.key is not None
        config = self.config
        relays = healthy_relays(config)
        book = link_book(config, self.key)
        expires = now + config.signing.link_expiry
        with (
            subscriber_store(config, self.number_key) as store,
            open_distributor(config, relays) as record,
        ):
            rows: list[smsgw.NewMessage] = []
            reached: list[str] = []
            messages: dict[str, Segmentation] = {}
            for pool, members in _by_pool(store).items():
                try:
                    given = record.assign_many([m.number for m in members], pool, now)
                except DistributionError as exc:  # e.g. no healthy relay in this pool
                    log.warning("%d subscribers in pool %s get nothing: %s",
                                len(members), pool, exc)  # fmt: skip
                    continue
                for member, assignment in zip(members, given, strict=True):
                    for i, link in enumerate(book.links(book.signable(assignment.relays), now), 1):
                        campaign = f"list-v{version}-e{epoch}-{i}"
                        if link not in messages:  # one relay's link goes to many people
                            messages[link] = link_message(link)
                        rows += smsgw.new_messages(
                            self.number_key, member.number, campaign, messages[link], expires
                        )
                reached += [m.ref for m in members]
            with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
                queued, _ = queue.enqueue_many(rows, now)
            store.mark_sent_many(reached, now)  # after the queue holds their messages
        return queued, len(reached)


def _parse_state(data: bytes) -> list[int]:
    """``publisher.json``: ``{"epoch": E, "version": N}``, whole numbers; FormatError otherwise."""
    state = strictjson.loads_object(data)
    extra = sorted(set(state) - {"version", "epoch"})
    if extra:
        raise signing.FormatError(f"unknown field {extra[0][:40]!r}")
    values = []
    for name, least in (("version", 1), ("epoch", 0)):
        value = state.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise signing.FormatError(f"{name!r} is not a whole number of at least {least}")
        values.append(value)
    return values


def _by_pool(store: smsgw.SubscriberStore) -> dict[str, list[smsgw.Subscriber]]:
    pools: dict[str, list[smsgw.Subscriber]] = {}
    for member in store.iter_all():
        pools.setdefault(member.pool, []).append(member)
    return pools


def _say_round(report: RoundReport) -> None:
    healthy = sum(r.ok for r in report.results)
    head = f"probed {len(report.results)} relays: {healthy} healthy"
    if report.published is None:
        log.warning("%s; no list published: %s", head, report.error)
        return
    build = report.published.build
    what = f"list v{build.document.version}" + (" (new)" if build.changed else " (unchanged)")
    sent = f"; queued {report.distributed} SMS parts for {report.recipients} subscribers"
    log.info("%s; %s%s", head, what, sent if report.recipients else "")


__all__ = ["Publisher", "RoundReport"]
