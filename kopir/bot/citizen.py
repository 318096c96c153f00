"""What the bot does for anyone: their own relays as signed links and QR codes (/proxy), verdicts
on links (/verify and plain messages), and reports of relays that do not work (/report).

Theory of operation
-------------------
A Telegram user is the recipient ``tg:<user id>`` of the distribution (the form
``kopir list assign`` takes), so the bot, the SMS publisher and the command line hand out from
one record with one rate limit: ``proxylist.Distributor.assign`` gives the user ``k`` relays of
their pool, or, asked again within ``[distribution] interval`` when the set would change, the
previous set again. The pool is ``new`` for user ids above ``[bot] new_account_threshold``
(accounts made during the crisis, perhaps by a censor) and ``established`` otherwise; the two
pools share no relay. Each relay becomes a link signed with the online key
(``proxylist.LinkBook``) and a QR code of that very link (``proxylist.qr``).

Every method here is synchronous and does file and SQLite work; the bot calls them through
``asyncio.to_thread``. Each opens what it needs and closes it, so threads share nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import signing
from kopir.bot.replies import Photo, Reply, explain_links
from kopir.bot.store import BotStore
from kopir.bot.texts import Language, text
from kopir.config import Config
from kopir.distcmd import healthy_relays, link_book, open_distributor
from kopir.listcmd import publisher_relays
from kopir.output import CommandFailed
from kopir.signcmd import find_links, load_trust
from proxylist import Distributor, load_secret, qr
from proxylist.errors import ProxylistError

log = logging.getLogger("kopir.bot")
QR_SCALE = 8


def recipient(user: int) -> str:
    """The distribution's name for a Telegram user."""
    return f"tg:{user}"


def pool_for(user: int, threshold: int) -> str:
    """``new`` for accounts made after the threshold id, else ``established``."""
    return "new" if user > threshold else "established"


@dataclass(frozen=True)
class Handout:
    """One /proxy answer, before it is put into words."""

    links: tuple[str, ...]
    limited: bool
    expires: float


class Citizen:
    def __init__(self, config: Config, key: signing.SecretKey, store: BotStore) -> None:
        self.config, self.key, self.store = config, key, store

    def cohort(self, user: int) -> str:
        """The user's keyed hash (the distribution record's cohort): what logs and files hold."""
        dist = self.config.distribution
        secret_path = self.config.in_data(dist.secret)
        if not secret_path.exists():
            with open_distributor(self.config, []) as record:  # makes the secret, once
                return record.cohort(recipient(user))
        with Distributor(
            self.config.in_data(dist.record), load_secret(secret_path), {}, k=dist.k
        ) as record:
            return record.cohort(recipient(user))

    def handout(self, user: int, now: float) -> Handout:
        """The user's relays as signed links; raises ``ProxylistError`` or ``CommandFailed``."""
        config = self.config
        relays = healthy_relays(config)
        pool = pool_for(user, config.bot.new_account_threshold)
        with open_distributor(config, relays) as record:
            given = record.assign(recipient(user), pool, now)
        book = link_book(config, self.key)
        links = book.links(book.signable(given.relays), now)
        if not links:
            raise ProxylistError("the user's set has left the config")
        log.info("/proxy: cohort %s, pool %s, %d relays%s", given.cohort[:12], pool,
                 len(links), " (rate-limited)" if given.limited else "")  # fmt: skip
        return Handout(links, given.limited, now + config.signing.link_expiry)

    def proxy(self, user: int, language: Language, now: float) -> Reply:
        try:
            given = self.handout(user, now)
        except (ProxylistError, CommandFailed) as exc:
            log.warning("/proxy: nothing to hand out: %s", exc)
            return Reply.say(text(language, "proxy_none"))
        from kopir.bot.replies import utc

        lines = [text(language, "proxy_head", count=len(given.links))]
        lines += [f"{n}. {link}" for n, link in enumerate(given.links, 1)]
        lines.append(text(language, "proxy_until", until=utc(given.expires)))
        if given.limited:
            lines.append(text(language, "proxy_limited"))
        photos = tuple(
            Photo(qr.png(qr.encode(link), scale=QR_SCALE), f"{n}. {link}")
            for n, link in enumerate(given.links, 1)
        )
        return Reply(Reply.say("\n\n".join(lines)).texts, photos)

    def verify(self, message: str, language: Language, now: float) -> Reply:
        trust = load_trust(self.config.in_data(self.config.signing.trust))
        explained, reasons = explain_links(message, trust, now, language)
        if reasons:
            log.info("verified %d links: %s", len(reasons), ", ".join(sorted(set(reasons))))
        return Reply.say(explained)

    def report(self, cohort: str, argument: str, language: Language, now: float) -> Reply:
        """Record that the relay behind ``argument`` (a link) does not work for the user whose
        keyed hash is ``cohort``."""
        links = find_links(argument)
        if not links:
            return Reply.say(text(language, "report_usage"))
        try:
            link = signing.parse_link(links[0])
        except signing.VerificationError as exc:
            return Reply.say(text(language, "malformed", what=exc.detail[:200]))
        relay = next(
            (
                r
                for r in publisher_relays(self.config)
                if r.server.lower() == link.server
                and link.port in r.ports
                and r.secret_hex == link.secret
            ),
            None,
        )
        if relay is None:
            return Reply.say(text(language, "report_unknown"))
        fresh = self.store.report(relay.name, cohort, now)
        if fresh:
            log.info("/report: relay %s does not work for cohort %s", relay.name, cohort[:12])
        return Reply.say(text(language, "report_thanks" if fresh else "report_again"))


__all__ = ["Citizen", "Handout", "pool_for", "recipient"]
