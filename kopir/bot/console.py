"""The operator's console in the bot: /status, /relays, /publish, /broadcast, /reports.

Theory of operation
-------------------
Only ``[bot] admins`` reach this module; the dispatcher (:mod:`kopir.bot.logic`) treats these
commands from anyone else exactly like a command that does not exist: no reply at all.
Replies are in English, one short line per fact, for a phone screen.

- ``/status`` reads the current list, the SMS queue and the subscriber count from disk, and
  the last probe round from the status history (shared with the web app under ``kopir run``).
- ``/relays`` shows the last probe round, probing now when there is none yet.
- ``/publish`` runs one publisher round now (probe, build, sign, log, distribute) through
  :class:`Sources`, the same round ``kopir run`` runs on its timer.
- ``/broadcast`` is two steps. The first only counts the subscribers and offers a "Send"
  button carrying a one-time nonce; pressing it within ``[bot] broadcast_timeout`` queues, in
  one transaction, one SMS per subscriber: their own first relay (distribution by their pool)
  as a signed link. The campaign is named after the nonce, and the queue's idempotency key
  (campaign, recipient, part) means a second press can never send twice.
- ``/reports`` lists relays that citizens reported dead, with the cohorts the distribution
  record says were given each one: where a burned relay leaked.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import signing
import smsgw
from kopir.bot.replies import Button, Reply, utc
from kopir.bot.store import BotStore
from kopir.config import Config
from kopir.distcmd import healthy_relays, link_book, open_distributor
from kopir.listcmd import publisher_relays
from kopir.output import CommandFailed
from kopir.publisher import RoundReport
from kopir.smscmd import subscriber_store
from kopir.web import StatusHistory
from proxylist import Distributor, ListStore, load_secret, probe_relays
from proxylist.errors import DistributionError, ProxylistError
from smsgw.compose import link_message

ADMIN_COMMANDS = ("status", "relays", "publish", "broadcast", "reports")
CONFIRM, CANCEL = "bc:", "bc:cancel"
SHOWN_COHORTS = 5


@dataclass(frozen=True)
class Sources:
    """What the console reads and runs, from ``kopir run`` or ``kopir bot run``."""

    history: StatusHistory
    publish: Callable[[float], Awaitable[RoundReport]]
    """One publisher round at ``now`` (with the checkpoint signed after it)."""
    key: signing.SecretKey


@dataclass(frozen=True)
class Pending:
    nonce: str
    expires: float
    subscribers: int


@dataclass
class Console:
    config: Config
    sources: Sources
    store: BotStore
    pending: dict[int, Pending] = field(default_factory=dict)

    # -- /status, /relays ---------------------------------------------------------------------

    async def status(self, now: float) -> Reply:
        lines = await asyncio.to_thread(self._disk_status, now)
        rounds = self.sources.history.probes
        if rounds:
            last = rounds[-1]
            lines.append(f"last probe {utc(last.at)}: {last.healthy}/{len(last.relays)} healthy")
        else:
            lines.append("no probe round yet in this process (/relays probes now)")
        return Reply.say("\n".join(lines))

    def _disk_status(self, now: float) -> list[str]:
        config = self.config
        store = ListStore(config.in_data(config.publisher.dir))
        if store.path.exists():
            doc = signing.parse_list(store.path.read_bytes())
            state = "expired" if now >= _rfc3339(doc.expires) else "valid"
            lines = [f"list v{doc.version}: {len(doc.proxies)} relays, {state} until {doc.expires}"]
        else:
            lines = ["no list yet (/publish makes one)"]
        queue_path = config.in_data(config.sms.queue)
        if queue_path.exists():
            with smsgw.Queue(queue_path) as queue:
                counts = {str(k): v for k, v in queue.counts().items() if v}
            lines.append(
                "SMS queue: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "empty")
            )
        with subscriber_store(config) as subscribers:
            lines.append(f"subscribers: {subscribers.count()}")
        reported = self.store.reports()
        lines.append(f"relays reported dead: {len(reported)} (/reports)")
        return lines

    async def relays(self, now: float) -> Reply:
        rounds = self.sources.history.probes
        if not rounds:
            pub = self.config.publisher
            results = await probe_relays(
                publisher_relays(self.config), timeout=pub.probe_timeout,
                concurrency=pub.probe_concurrency,
            )  # fmt: skip
            self.sources.history.record_probe(results, now)
            rounds = self.sources.history.probes
        last = rounds[-1]
        lines = [f"probe at {utc(last.at)}: {last.healthy}/{len(last.relays)} healthy"]
        for sample in last.relays:
            if sample.ok:
                rtt = f"{sample.rtt_ms:.0f} ms" if sample.rtt_ms is not None else "ok"
                lines.append(f"✅ {sample.name}: {rtt}")
            else:
                lines.append(f"❌ {sample.name}: failed at {sample.failure}")
        return Reply.say("\n".join(lines))

    # -- /publish -----------------------------------------------------------------------------

    async def publish(self, now: float) -> Reply:
        report = await self.sources.publish(now)
        healthy = sum(r.ok for r in report.results)
        head = f"probed {len(report.results)} relays: {healthy} healthy"
        if report.published is None:
            return Reply.say(f"{head}; no list published: {report.error}")
        build = report.published.build
        what = "new, signed and logged" if build.changed else "unchanged"
        sent = f"; queued {report.distributed} SMS parts for {report.recipients} subscribers"
        return Reply.say(f"{head}; list v{build.document.version} ({what}){sent}")

    # -- /broadcast ---------------------------------------------------------------------------

    async def broadcast(self, admin: int, now: float) -> Reply:
        count = await asyncio.to_thread(self._subscriber_count)
        if not count:
            return Reply.say("no subscribers: nothing to broadcast")
        nonce = secrets.token_hex(4)
        timeout = self.config.bot.broadcast_timeout
        self.pending[admin] = Pending(nonce, now + timeout, count)
        buttons = (Button(f"Send to {count}", CONFIRM + nonce), Button("Cancel", CANCEL))
        return Reply.say(
            f"Queue one SMS to each of {count} subscribers: their own relay as a signed link. "
            f"Press Send within {timeout / 60:g} minutes to confirm.",
            buttons,
        )

    def _subscriber_count(self) -> int:
        with subscriber_store(self.config) as store:
            return store.count()

    async def answer(self, admin: int, data: str, now: float) -> Reply:
        """The reply to a pressed button (``bc:<nonce>`` or ``bc:cancel``)."""
        pending = self.pending.pop(admin, None)
        if data == CANCEL:
            return Reply.say(
                "broadcast cancelled: nothing queued" if pending else "nothing to cancel"
            )
        if pending is None or data != CONFIRM + pending.nonce:
            return Reply.say("this broadcast is no longer pending: send /broadcast again")
        if now >= pending.expires:
            return Reply.say("too late to confirm: nothing queued; send /broadcast again")
        try:
            queued, people = await asyncio.to_thread(self._queue_broadcast, pending.nonce, now)
        except (ProxylistError, CommandFailed, smsgw.SmsError) as exc:
            return Reply.say(f"broadcast failed, nothing queued: {exc}")
        return Reply.say(
            f"broadcast bot-{pending.nonce}: queued {queued} SMS parts for {people} subscribers"
        )

    def expire(self, admin: int, nonce: str) -> Reply | None:
        """The job queue's timeout: drop the broadcast if it is still waiting."""
        pending = self.pending.get(admin)
        if pending is None or pending.nonce != nonce:
            return None
        del self.pending[admin]
        return Reply.say("broadcast not confirmed in time: nothing queued")

    def _queue_broadcast(self, nonce: str, now: float) -> tuple[int, int]:
        config = self.config
        relays = healthy_relays(config)
        book = link_book(config, self.sources.key)
        keys = smsgw.load_key_file(config.in_data(config.subscribers.key))
        rows: list[smsgw.NewMessage] = []
        people = 0
        expires = now + config.signing.link_expiry
        with subscriber_store(config, keys) as store, open_distributor(config, relays) as record:
            for pool, members in _by_pool(store).items():
                try:
                    given = record.assign_many([m.number for m in members], pool, now)
                except DistributionError:
                    continue
                for member, assignment in zip(members, given, strict=True):
                    names = book.signable(assignment.relays)
                    if not names:
                        continue
                    link = book.link(names[0], now)
                    message = link_message(link)
                    rows += smsgw.new_messages(
                        keys, member.number, f"bot-{nonce}", message, expires
                    )
                    people += 1
        with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
            queued, _ = queue.enqueue_many(rows, now)
        return queued, people

    # -- /reports -----------------------------------------------------------------------------

    async def reports(self) -> Reply:
        return Reply.say(await asyncio.to_thread(self._reports))

    def _reports(self) -> str:
        reported = self.store.reports()
        if not reported:
            return "no relay has been reported dead"
        lines = []
        with _record(self.config) as record:
            for item in reported:
                lines.append(
                    f"{item.relay}: reported by {len(item.cohorts)}, last {utc(item.last)}"
                )
                if record is None:
                    continue
                exposure = record.exposed(item.relay)
                shown = ", ".join(c[:12] for c in exposure.cohorts[:SHOWN_COHORTS])
                more = len(exposure.cohorts) - SHOWN_COHORTS
                lines.append(
                    f"  given {exposure.total} times to {len(exposure.cohorts)} cohorts in "
                    f"{len(exposure.epochs)} epochs"
                    + (f": {shown}" if shown else "")
                    + (f" and {more} more (kopir list exposed {item.relay})" if more > 0 else "")
                )
        return "\n".join(lines)


@contextlib.contextmanager
def _record(config: Config) -> Iterator[Distributor | None]:
    """The distribution record, or None when nothing was ever handed out."""
    path = config.in_data(config.distribution.record)
    secret = config.in_data(config.distribution.secret)
    if not path.exists() or not secret.exists():
        yield None
        return
    with Distributor(path, load_secret(secret), {}, k=config.distribution.k) as record:
        yield record


def _by_pool(store: smsgw.SubscriberStore) -> dict[str, list[smsgw.Subscriber]]:
    pools: dict[str, list[smsgw.Subscriber]] = {}
    for member in store.iter_all():
        pools.setdefault(member.pool, []).append(member)
    return pools


def _rfc3339(value: str) -> float:
    """An RFC 3339 UTC time as the list writes it; a time we cannot read counts as past."""
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return 0.0


__all__ = ["ADMIN_COMMANDS", "CANCEL", "CONFIRM", "Console", "Pending", "Sources"]
