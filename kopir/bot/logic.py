"""The bot's dispatcher: one message (or button press) in, one :class:`Reply` or silence out.

Theory of operation
-------------------
``handle`` is everything the bot does with a message, without the Telegram library, so the
tests drive it directly as well as through a fake Bot API server:

1. flood control (:class:`kopir.bot.replies.Flood`) drops or warns a user who sends too much;
2. the reply language is the one the user chose with /lang, else their Telegram app's if it is
   kk, ru or en, else ``[bot] language``;
3. a command goes to :class:`~kopir.bot.citizen.Citizen` or, for ``[bot] admins`` only, to
   :class:`~kopir.bot.console.Console`; free text is scanned for links and each is verified.

Operator commands from anyone else, and commands that do not exist, get no reply at all: the
two cannot be told apart, so nobody learns that operator commands exist. A failure that is not
the user's doing (no list yet, a missing trust root) is logged for the operator and answered
with "try again later", never a traceback. Logs name users only by keyed hash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import signing
import smsgw
from kopir.bot.citizen import Citizen
from kopir.bot.console import ADMIN_COMMANDS, Console, Sources
from kopir.bot.replies import Command, Flood, Incoming, Reply, parse_command
from kopir.bot.store import BotStore, StoreError
from kopir.bot.texts import LANGUAGES, Language, language_of, text
from kopir.config import Config, ConfigError
from kopir.output import CommandFailed
from proxylist.errors import ProxylistError

log = logging.getLogger("kopir.bot")
CITIZEN_COMMANDS = ("start", "help", "lang", "proxy", "verify", "report")
TROUBLE = (
    CommandFailed, ConfigError, signing.SigningError, ProxylistError, smsgw.SmsError,
    StoreError, sqlite3.Error, OSError,
)  # fmt: skip
"""Failures of our files or setup, not of the user's input."""
MAX_COHORTS_CACHED = 10_000


class BotLogic:
    def __init__(self, config: Config, sources: Sources) -> None:
        bot = config.bot
        self.config = config
        self.store = BotStore(config.in_data(bot.state))
        self.citizen = Citizen(config, sources.key, self.store)
        self.console = Console(config, sources, self.store)
        self.flood = Flood(bot.flood_messages, bot.flood_window)
        self.admins = frozenset(bot.admins)
        self._cohorts: dict[int, str] = {}

    def is_admin(self, user: int) -> bool:
        return user in self.admins

    async def handle(self, message: Incoming, now: float) -> Reply | None:
        allowed = self.flood.check(message.user, now)
        if allowed == "drop":
            return None
        command = parse_command(message.text)
        if command is not None and command.name not in CITIZEN_COMMANDS:
            if command.name in ADMIN_COMMANDS and self.is_admin(message.user):
                return await self._admin(command, message.user, now)
            return None
        try:
            language = await self._language(message)
        except TROUBLE as exc:
            log.warning("cannot read a user's language: %s", exc)
            language = self.config.bot.language
        if allowed == "warn":
            return Reply.say(text(language, "flood"))
        try:
            return await self._citizen(command, message, language, now)
        except TROUBLE as exc:
            log.warning("cannot answer a citizen: %s", exc)
            return Reply.say(text(language, "proxy_unavailable"))

    async def press(self, user: int, data: str, now: float) -> Reply | None:
        """A button under a reply was pressed; only operators' buttons exist."""
        if not self.is_admin(user) or self.flood.check(user, now) == "drop":
            return None
        return await self.console.answer(user, data, now)

    async def _citizen(
        self, command: Command | None, message: Incoming, language: Language, now: float
    ) -> Reply:
        if command is None:
            return await asyncio.to_thread(self.citizen.verify, message.text, language, now)
        name, argument = command.name, command.argument
        if name == "lang":
            return await self._set_language(message.user, argument, language, now)
        if name == "proxy":
            return await asyncio.to_thread(self.citizen.proxy, message.user, language, now)
        if name == "verify":
            return await asyncio.to_thread(self.citizen.verify, argument, language, now)
        if name == "report":
            cohort = await self._cohort(message.user)
            return await asyncio.to_thread(self.citizen.report, cohort, argument, language, now)
        return Reply.say(text(language, "start" if name == "start" else "help"))

    async def _admin(self, command: Command, user: int, now: float) -> Reply:
        log.info("operator command /%s", command.name)
        console = self.console
        try:
            if command.name == "status":
                return await console.status(now)
            if command.name == "relays":
                return await console.relays(now)
            if command.name == "publish":
                return await console.publish(now)
            if command.name == "broadcast":
                return await console.broadcast(user, now)
            return await console.reports()
        except TROUBLE as exc:
            return Reply.say(f"/{command.name} failed: {exc}")

    async def _language(self, message: Incoming) -> Language:
        cohort = await self._cohort(message.user)
        chosen = await asyncio.to_thread(self.store.language, cohort)
        for language in LANGUAGES:
            if chosen == language:
                return language
        return language_of(message.language_code, self.config.bot.language)

    async def _set_language(self, user: int, argument: str, current: Language, now: float) -> Reply:
        wanted = argument.strip().lower()
        for language in LANGUAGES:
            if wanted == language:
                cohort = await self._cohort(user)
                await asyncio.to_thread(self.store.set_language, cohort, language, now)
                return Reply.say(text(language, "lang_set"))
        return Reply.say(text(current, "lang_choose"))

    async def _cohort(self, user: int) -> str:
        """The user's keyed hash, remembered (in memory only) to spare a file read per message."""
        cohort = self._cohorts.get(user)
        if cohort is None:
            cohort = await asyncio.to_thread(self.citizen.cohort, user)
            if len(self._cohorts) >= MAX_COHORTS_CACHED:
                self._cohorts.clear()
            self._cohorts[user] = cohort
        return cohort


__all__ = ["CITIZEN_COMMANDS", "BotLogic"]
