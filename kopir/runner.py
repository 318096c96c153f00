"""``kopir run``: the main job, in one asyncio process.

What runs, each a task on one event loop:

- the **relay** (``[relay]``), with the local stand-in DC when ``[relay] local_test_dc`` asks
  for it (``relay.LocalTestDC``; never Telegram);
- the **publisher** (:mod:`kopir.publisher`): every ``[publisher] probe_interval`` it probes the
  relays, publishes list version N+1 when the healthy set changed (signed with the online key,
  appended to the log), and queues each subscriber's own signed links when the version or the
  distribution epoch changed; after each round the log checkpoint is re-signed into
  ``<data>/public/``;
- the **SMS worker** (``smsgw.Worker``) sending the queue through ``[sms] backend``, answering
  inbound STOP / PROXY / HELP where the backend receives SMS;
- the **web app** (``[web]``), with the SMS provider webhooks mounted on it;
- the **Telegram bot** (:mod:`kopir.bot`) when ``[bot] token`` is set, sharing the status
  history with the web app and running publisher rounds for an operator's /publish.

SIGTERM or SIGINT sets one stop event: the publisher finishes or abandons its round (a round
is idempotent), the worker finishes the window it is sending (what is left stays queued, and
``Worker.start`` requeues anything in flight on the next start), the relay stops accepting and
then closes its connections, the bot stops polling, and the web app closes. ``--once`` does
one publisher round, sends what it queued, and exits (without the bot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import signing
import smsgw
from kopir.bot import BotError, TelegramBot, make_bot
from kopir.bot import Sources as BotSources
from kopir.config import Config, ConfigError
from kopir.distcmd import healthy_relays, link_book, open_distributor
from kopir.listcmd import list_policy, publisher_relays
from kopir.output import CommandFailed
from kopir.publisher import Publisher, RoundReport
from kopir.relaycmd import (
    KEPT_SECRET,
    relay_settings,
    start_local_dc,
    start_relay,
    with_kept_secret,
)
from kopir.setup import Prepared, SetupError
from kopir.setup import prepare as setup_prepare
from kopir.smscmd import number_key, subscriber_store
from kopir.web import (
    StatusError,
    StatusHistory,
    WebError,
    WebSources,
    bound_port,
    make_app,
    parse_listen,
    serve_web,
)
from kopir.web.auth import AuthError, resolve_token
from proxylist.errors import DistributionError
from signing.fileio import write_atomic
from smsgw.backend import Backend
from smsgw.compose import LINK_TEMPLATE

log = logging.getLogger("kopir.run")


Setup = Prepared
"""What the job needs from the data directory (see ``kopir.setup``)."""


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def prepare(config: Config) -> Prepared:
    """Make the data directory ready (``kopir.setup``: what is missing is made, never
    replaced), and say what was made."""
    try:
        prepared = setup_prepare(config)
    except SetupError as exc:
        raise CommandFailed(str(exc)) from None
    for item in prepared.report.items:
        if item.made:
            say(f"created {item.what}: {item.path} (mode {item.mode:04o})")
    return prepared


def publish_checkpoint(setup: Setup) -> None:
    note = setup.log.checkpoint()
    write_atomic(setup.public_dir / "checkpoint", note)
    for src in [setup.trust_path, *signing.signature_files(setup.trust_path).values()]:
        write_atomic(setup.public_dir / src.name, src.read_bytes())
    say(f"log {setup.log.origin}: size {setup.log.size}, checkpoint in {setup.public_dir}")


# -- pieces of the setup --------------------------------------------------------------------


def with_relay_secret(config: Config) -> Config:
    """A config with ``[[relay.secrets]]``: when it has none, a secret kept in the data dir
    (``keys/relay.secret``, 0600, made once), so the example config runs as it is."""
    path = config.in_data(KEPT_SECRET)
    if not config.relay.secrets and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, os.urandom(16).hex().encode(), 0o600)
        say(f"no [[relay.secrets]] in {config.path}: made one in {path} (mode 0600)")
    return with_kept_secret(config)


def seed_test_subscribers(config: Config, store: smsgw.SubscriberStore) -> None:
    numbers = config.subscribers.test_numbers
    for number in numbers:
        store.add(number, "ru", "established", "kopir run: [subscribers] test_numbers", time.time())
    if numbers:
        say(f"test subscribers from [subscribers] test_numbers: {len(numbers)}")


def proxy_reply(
    config: Config, key: signing.SecretKey, store: smsgw.SubscriberStore, keys: smsgw.NumberKey
) -> Callable[[str, str], str | None]:
    """The answer to an inbound PROXY: the sender's own first relay, as a signed link. A
    subscriber draws from their pool; anyone else from ``new`` only, so a stranger (perhaps a
    censor) never learns an established relay. None (the standard reply) when there is none."""

    def reply(number: str, language: str) -> str | None:
        try:
            pool = store.get(keys.ref(number)).pool
        except smsgw.SubscriberError:
            pool = "new"
        now = time.time()
        try:
            relays = healthy_relays(config)
            with open_distributor(config, relays) as record:
                given = record.assign(number, pool, now)
        except (DistributionError, CommandFailed) as exc:
            log.warning("no relay for a PROXY request (pool %s): %s", pool, exc)
            return None
        book = link_book(config, key)
        names = book.signable(given.relays)
        if not names:
            log.warning("no relay for a PROXY request (pool %s): its set has left the config", pool)
            return None
        return LINK_TEMPLATE.format(link=book.link(names[0], now))

    return reply


# -- the job --------------------------------------------------------------------------------


class Job:
    """Everything ``kopir run`` starts, and the order it stops them in."""

    def __init__(self, config: Config, setup: Setup, backend: Backend) -> None:
        self.config, self.setup, self.backend = config, setup, backend
        self.stop = asyncio.Event()
        self.stack = contextlib.AsyncExitStack()
        self.tasks: list[asyncio.Task[object]] = []
        self.bot: TelegramBot | None = None
        self.keys = number_key(config)
        try:
            self.history = StatusHistory(config.web.history)
        except StatusError as exc:
            raise ConfigError(f"{config.path}: [web] history: {exc}") from None

    async def start(self) -> None:
        self._make_bot()  # first: it only checks and builds, nothing listens yet
        await self._start_relay()
        await self._start_worker()
        self.publisher = Publisher(
            self.config, key=self.setup.key, log_store=self.setup.log,
            number_key=self.keys, on_round=self._on_round,
        )  # fmt: skip
        await self._start_web()

    # -- the Telegram bot (kopir.bot): made in start, run by serve until the stop event ------

    def _make_bot(self) -> None:
        sources = BotSources(self.history, self._publish_now, self.setup.key)
        try:
            self.bot = make_bot(self.config, sources)
        except BotError as exc:
            raise ConfigError(str(exc)) from None
        if self.bot is not None:
            say(f"Telegram bot: {self.config.bot.mode}, {len(self.config.bot.admins)} operators")

    async def _publish_now(self, now: float) -> RoundReport:
        """An operator's /publish: one publisher round now, and the checkpoint after it."""
        report = await self.publisher.round(now)
        publish_checkpoint(self.setup)
        return report

    def _on_round(self, report: RoundReport, now: float) -> None:
        """Each publisher round goes into the status page's history."""
        self.history.record_probe(report.results, now)
        if report.published is not None:
            build = report.published.build
            self.history.record_list(build.document.version, build.healthy, build.relays, now)
        self.history.record_queue({str(k): v for k, v in self.queue.counts().items()}, now)

    async def _start_web(self) -> None:
        sources = WebSources(relay_metrics=self.relay.metrics.render, key=self.setup.key)
        try:
            app = make_app(self.config, self.history, sources=sources)
            for path, handler in smsgw.webhook_routes(self.backend).items():
                app.router.add_route("GET", path, handler)
                app.router.add_route("POST", path, handler)
            runner = await serve_web(app, self.config.web.listen)
        except WebError as exc:
            raise ConfigError(f"{self.config.path}: {exc}") from None
        self.stack.push_async_callback(runner.cleanup)
        host, _ = parse_listen(self.config.web.listen)
        say(f"web app on http://{host}:{bound_port(runner)}/ (status: /status, verifier: /verify)")

    async def _start_relay(self) -> None:
        settings, local_dc = await start_local_dc(self.config, relay_settings(self.config))
        if local_dc is not None:
            self.stack.push_async_callback(local_dc.stop)
        relay = self.relay = await start_relay(self.config, settings)
        self.stack.push_async_callback(relay.stop)
        for host, port in relay.addresses:
            say(f"relay listening on {host}:{port} ({', '.join(sorted(settings.modes))})")

    async def _start_worker(self) -> None:
        config = self.config
        store = subscriber_store(config, self.keys)
        self.stack.callback(store.close)
        seed_test_subscribers(config, store)
        queue = self.queue = smsgw.Queue(config.in_data(config.sms.queue))
        self.stack.callback(queue.close)
        reply = proxy_reply(config, self.setup.key, store, self.keys)
        commands = smsgw.subscriber_commands(store, self.keys, reply)
        self.worker = smsgw.Worker(
            queue, self.keys, self.backend, window=config.sms.window,
            retry_delay=config.sms.retry_delay, commands=commands,
            default_region=config.subscribers.default_region,
        )  # fmt: skip
        recovered = await self.worker.start()
        self.stack.push_async_callback(self.worker.stop)
        say(f"SMS worker: {config.sms.backend} backend" + _recovered(recovered))

    def spawn(self, work: Awaitable[object]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    async def once(self) -> RoundReport:
        report = await self.publisher.round(time.time())
        publish_checkpoint(self.setup)
        sent = await self.worker.drain()
        say(f"SMS: {sent.accepted} parts accepted, {sent.retried} to retry, {sent.failed} failed")
        return report

    def _record_sends(self, report: smsgw.StepReport) -> None:
        self.history.record_sends(
            self.config.sms.backend, report.accepted, report.retried, report.failed, time.time()
        )

    async def serve(self) -> None:
        self.spawn(self.publisher.loop(self.stop, lambda: publish_checkpoint(self.setup)))
        self.spawn(self.worker.run(self.stop, on_step=self._record_sends))
        if self.bot is not None:
            self.spawn(self.bot.run(self.stop))
        await self.stop.wait()
        say("kopir run: stopping")
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _recovered(count: int) -> str:
    return f"; {count} messages in flight at the last stop requeued" if count else ""


def _daemon_logging() -> None:
    """The job's own log lines go to stdout like its other progress lines, with the time."""
    logger = logging.getLogger("kopir")
    if any(getattr(h, "kopir_run", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.kopir_run = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def check_config(config: Config) -> Backend:
    """The checks each part of the job makes on its config when it starts, made before any
    part starts, so a mistake exits 2 with nothing listening, added or queued. ``config``
    has its relay secret (``with_relay_secret``). The bot's checks come first in
    ``Job.start``; the web app's port and the relay's are known to be free only by trying.
    Returns the SMS backend, built (not started) while checking its table."""
    relay_settings(config)
    publisher_relays(config)
    list_policy(config)
    try:
        backend = smsgw.make_backend(config.sms, config.data_dir)
    except smsgw.BackendConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    try:
        parse_listen(config.web.listen)
        resolve_token(config.web.token, os.environ)
    except (WebError, AuthError) as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    return backend


async def run(config: Config, once: bool = False) -> int:
    _daemon_logging()
    setup = prepare(config)
    config = with_relay_secret(config)
    backend = check_config(config)
    say(f"kopir run: data in {config.data_dir}, signing key {setup.key.hex_id}")
    job = Job(config, setup, backend)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, job.stop.set)
    async with job.stack:
        await job.start()
        if once:
            await job.once()
        else:
            await job.serve()
    say("kopir run: stopped")
    sys.stdout.flush()
    return 0
