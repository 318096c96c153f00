"""The Telegram side of the bot: a python-telegram-bot v22 ``Application`` around
:class:`kopir.bot.logic.BotLogic`.

Theory of operation
-------------------
This module only moves messages. One ``MessageHandler`` takes every private text message (and
captions, and the addresses behind hyperlinked words), turns it into an
:class:`~kopir.bot.replies.Incoming`, and sends back what the logic replies: text without
link previews, then QR code photos. One ``CallbackQueryHandler`` takes the operator's
"Send"/"Cancel" buttons. The job queue forgets idle users of the flood control every window and
withdraws a /broadcast that was not confirmed in time. Group chats are ignored: proxies are
handed out one person at a time.

Updates arrive by long polling (``getUpdates``) by default. In webhook mode an aiohttp server
on ``[bot] webhook_listen`` takes Telegram's POSTs, checks the secret header in constant time,
and puts each update on the application's queue; ``setWebhook`` tells Telegram where to post.
A body is checked before python-telegram-bot sees it (``read_update``): the parts the bot reads
must have the Bot API's types, since ``Update.de_json`` trusts its input (``null`` raises
``AttributeError``, a string user id reaches the handlers). Anything else gets a 400 and one
log line naming neither the body nor the error's text (they hold a user's words).

:meth:`TelegramBot.run` keeps the bot up until a stop event: when Telegram cannot be reached
(during a shutdown it often cannot), it retries with a growing pause instead of failing, so
``kopir run`` keeps its relay and SMS worker going. A wrong token stops the bot with one line.
The Bot API URL carries the token, so the HTTP client's request log is kept at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from kopir.bot.logic import BotLogic
from kopir.bot.replies import Incoming, Reply
from kopir.config import Config
from kopir.web import WebError, parse_listen
from kopir.web.auth import token_matches
from smsgw.webhooks import ServerLog

log = logging.getLogger("kopir.bot")
CAPTION_LIMIT = 1024
MAX_BACKOFF = 60.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
UPDATES = ["message", "callback_query"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Hosts a plain-http webhook_url may name (a Bot API server of one's own, or tests)."""
CITIZEN_MENU = [
    BotCommand("proxy", "your own proxies, with QR codes"),
    BotCommand("verify", "check a proxy link"),
    BotCommand("report", "a proxy does not work"),
    BotCommand("lang", "kk, ru or en"),
    BotCommand("help", "how to use this bot"),
]
ADMIN_MENU = [
    *CITIZEN_MENU,
    BotCommand("status", "list, queue, subscribers"),
    BotCommand("relays", "probe results"),
    BotCommand("publish", "probe, build, sign and log now"),
    BotCommand("broadcast", "SMS to every subscriber (asks first)"),
    BotCommand("reports", "relays reported dead, and their cohorts"),
]

AnyApplication = Application[Any, Any, Any, Any, Any, Any]


class BotError(Exception):
    """The bot cannot run as configured; the message says what to change."""


def resolve_secret(value: str, environ: Mapping[str, str]) -> str:
    """A config value that may be ``env:NAME``; an unset variable reads as empty."""
    if value.startswith("env:"):
        return environ.get(value[4:], "").strip()
    return value.strip()


class TelegramBot:
    def __init__(
        self, config: Config, logic: BotLogic, environ: Mapping[str, str] | None = None
    ) -> None:
        environ = os.environ if environ is None else environ
        check_bot_settings(config, environ)
        self.config, self.logic = config, logic
        self.token = resolve_secret(config.bot.token, environ)
        self.secret = resolve_secret(config.bot.webhook_secret, environ)
        for noisy in ("httpx", "httpcore", "telegram", "apscheduler"):
            logger = logging.getLogger(noisy)
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        self.app: AnyApplication = self._build()
        self._site: web.AppRunner | None = None
        self.started = asyncio.Event()

    # -- building -----------------------------------------------------------------------------

    def _build(self) -> AnyApplication:
        bot = self.config.bot
        app = (
            Application.builder()
            .token(self.token)
            .base_url(bot.base_url)
            .get_updates_read_timeout(bot.poll_timeout + 10)
            .build()
        )
        private = filters.ChatType.PRIVATE
        app.add_handler(MessageHandler(private & (filters.TEXT | filters.CAPTION), self._message))
        app.add_handler(CallbackQueryHandler(self._button))
        app.add_error_handler(self._error)
        return app

    # -- handlers -----------------------------------------------------------------------------

    async def _message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        incoming = Incoming(user.id, message_text(message), user.language_code)
        reply = await self.logic.handle(incoming, time.time())
        if reply is None:
            return
        await self.send(message.chat_id, reply)
        if reply.buttons:
            self._expire_later(user.id, message.chat_id)

    async def _button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None:
            return
        await query.answer()
        reply = await self.logic.press(user.id, query.data or "", time.time())
        if reply is None or query.message is None:
            return
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(None)
        await self.send(query.message.chat.id, reply)

    async def _error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        # The update is not logged: it holds the user's id and words.
        log.warning("bot: %s: %s", type(error).__name__, error)

    def _expire_later(self, admin: int, chat: int) -> None:
        pending = self.logic.console.pending.get(admin)
        queue = self.app.job_queue
        if pending is None or queue is None:
            return

        async def expire(context: ContextTypes.DEFAULT_TYPE) -> None:
            reply = self.logic.console.expire(admin, pending.nonce)
            if reply is not None:
                await self.send(chat, reply)

        queue.run_once(expire, self.config.bot.broadcast_timeout, name=f"broadcast-{pending.nonce}")

    async def _forget(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.logic.flood.forget(time.time())

    async def send(self, chat: int, reply: Reply) -> None:
        """Send ``reply``: its texts (buttons under the last), then its photos."""
        bot = self.app.bot
        no_preview = LinkPreviewOptions(is_disabled=True)
        markup = None
        if reply.buttons:
            row = [InlineKeyboardButton(b.label, callback_data=b.data) for b in reply.buttons]
            markup = InlineKeyboardMarkup([row])
        for n, chunk in enumerate(reply.texts, 1):
            last = n == len(reply.texts)
            await bot.send_message(
                chat, chunk, link_preview_options=no_preview, reply_markup=markup if last else None
            )
        for photo in reply.photos:
            await bot.send_photo(chat, photo.png, caption=photo.caption[:CAPTION_LIMIT])

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, then poll or serve the webhook; raises ``TelegramError`` if Telegram is
        out of reach (the application is then shut down again)."""
        app = self.app
        await app.initialize()
        try:
            await self._menus()
            if self.config.bot.mode == "webhook":
                await self._start_webhook()
            else:
                assert app.updater is not None
                await app.updater.start_polling(
                    timeout=int(self.config.bot.poll_timeout), allowed_updates=UPDATES
                )
            if app.job_queue is not None:
                app.job_queue.run_repeating(self._forget, self.config.bot.flood_window)
            await app.start()
        except BaseException:
            await self._close()
            raise
        name = app.bot.username
        log.info("bot @%s: %s, %d operators", name, self.config.bot.mode, len(self.logic.admins))
        self.started.set()

    async def stop(self) -> None:
        app = self.app
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await self._close()

    async def _close(self) -> None:
        if self._site is not None:
            await self._site.cleanup()
            self._site = None
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        await self.app.shutdown()

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop`` is set, retrying while Telegram is out of reach. False when
        Telegram refused the token (nothing will change that until the config does)."""
        pause = 1.0
        while not stop.is_set():
            try:
                await self.start()
            except InvalidToken:
                log.error("bot: Telegram refused [bot] token; the bot is off until it is fixed")
                return False
            except (NetworkError, TelegramError, OSError) as exc:
                log.warning("bot: Telegram out of reach (%s); retrying in %.0f s", exc, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, MAX_BACKOFF)
                continue
            try:
                await stop.wait()
            finally:
                await self.stop()
                log.info("bot stopped")
        return True

    async def _menus(self) -> None:
        """The command menus: citizens' for everyone, the operators' in their own chats."""
        bot = self.app.bot
        try:
            await bot.set_my_commands(CITIZEN_MENU)
            for admin in sorted(self.logic.admins):
                await bot.set_my_commands(ADMIN_MENU, scope=BotCommandScopeChat(admin))
        except TelegramError as exc:
            log.warning("bot: could not set the command menus: %s", exc)

    # -- webhook ------------------------------------------------------------------------------

    async def _start_webhook(self) -> None:
        bot = self.config.bot
        path = urlsplit(bot.webhook_url).path or "/"
        site = web.Application(client_max_size=1 << 20)
        site.router.add_post(path, self._webhook)
        runner = web.AppRunner(site, access_log=None, logger=ServerLog("kopir.bot.webhook"))
        await runner.setup()
        host, port = parse_listen(bot.webhook_listen)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise BotError(f"[bot] webhook_listen {bot.webhook_listen}: {exc}") from None
        self._site = runner
        await self.app.bot.set_webhook(
            bot.webhook_url, secret_token=self.secret, allowed_updates=UPDATES
        )

    def webhook_port(self) -> int:
        """The port the webhook server listens on (useful with port 0)."""
        assert self._site is not None
        for site in self._site.sites:
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                return int(server.sockets[0].getsockname()[1])
        raise BotError("the webhook server is not listening")

    async def _webhook(self, request: web.Request) -> web.Response:
        # token_matches encodes with errors="replace": a header that is not UTF-8 (aiohttp
        # hands it over as lone surrogates) is simply a wrong secret.
        if not token_matches(request.headers.get(SECRET_HEADER, ""), self.secret):
            return web.Response(status=403)
        try:
            body = await request.read()
        except web.RequestPayloadError:  # a Content-Encoding that does not decode
            log.warning("bot: webhook: the body could not be read")
            return web.Response(status=400, text="the body could not be read\n")
        update = read_update(body, self.app.bot)
        if update is None:
            return web.Response(status=400, text="not a Telegram update\n")
        await self.app.update_queue.put(update)
        return web.Response(text="ok")


_INT64 = 1 << 63


def _is_int(value: object, low: int = -_INT64, high: int = _INT64) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _is_text(value: object) -> bool:
    """A string, or absent."""
    return value is None or isinstance(value, str)


def _user_ok(user: object) -> bool:
    return (
        isinstance(user, dict)
        and _is_int(user.get("id"))
        and isinstance(user.get("is_bot"), bool)
        and isinstance(user.get("first_name"), str)
        and _is_text(user.get("language_code"))
    )


def _entities_ok(entities: object) -> bool:
    if entities is None:
        return True
    return isinstance(entities, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("type"), str)
        and _is_int(e.get("offset"))
        and _is_int(e.get("length"))
        and _is_text(e.get("url"))
        for e in entities
    )


def _message_ok(message: object) -> bool:
    if not isinstance(message, dict):
        return False
    chat, sender = message.get("chat"), message.get("from")
    return (
        _is_int(message.get("message_id"))
        and _is_int(message.get("date"), 0, 1 << 32)
        and isinstance(chat, dict)
        and _is_int(chat.get("id"))
        and isinstance(chat.get("type"), str)
        and (sender is None or _user_ok(sender))
        and _is_text(message.get("text"))
        and _is_text(message.get("caption"))
        and _entities_ok(message.get("entities"))
        and _entities_ok(message.get("caption_entities"))
    )


def _query_ok(query: object) -> bool:
    if not isinstance(query, dict):
        return False
    message = query.get("message")
    return (
        isinstance(query.get("id"), str)
        and _user_ok(query.get("from"))
        and isinstance(query.get("chat_instance"), str)
        and _is_text(query.get("data"))
        and (message is None or _message_ok(message))
    )


def update_fields(data: object) -> dict[str, Any] | None:
    """The fields of a decoded update the bot takes (``update_id`` and ``UPDATES``) when what
    the bot and python-telegram-bot read of them has the Bot API's types; else None."""
    if not isinstance(data, dict) or not _is_int(data.get("update_id"), 0):
        return None
    checks = {"message": _message_ok, "callback_query": _query_ok}
    taken = {name: data[name] for name in UPDATES if data.get(name) is not None}
    if not all(checks[name](value) for name, value in taken.items()):
        return None
    return {"update_id": data["update_id"], **taken}


def read_update(body: bytes, bot: Bot) -> Update | None:
    """A webhook body as an ``Update``, or None (logged in one line) when it is not one."""
    try:
        fields = update_fields(json.loads(body.decode("utf-8")))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        log.warning("bot: webhook: the body is not JSON (%s)", type(exc).__name__)
        return None
    if fields is None:
        log.warning("bot: webhook: the body is not a Telegram update")
        return None
    try:
        return Update.de_json(fields, bot)
    except Exception as exc:  # de_json trusts its input; whatever it raises, this is no update
        log.warning("bot: webhook: the body is not a Telegram update (%s)", type(exc).__name__)
        return None


def message_text(message: Message) -> str:
    """The words of a message or caption, plus the addresses behind hyperlinked words (a
    forwarded message may hide a proxy link behind "click here")."""
    words = message.text or message.caption or ""
    entities = message.entities or message.caption_entities or ()
    hidden = [e.url for e in entities if e.url]
    return "\n".join([words, *hidden]) if hidden else words


def check_bot_settings(config: Config, environ: Mapping[str, str]) -> None:
    """What the bot needs of ``[bot]`` before it is built (a token, and in webhook mode an
    https URL, a secret and a listen address); ``BotError`` naming the key otherwise."""
    if not resolve_secret(config.bot.token, environ):
        raise BotError(f"{config.path}: [bot] token is empty or its variable is not set")
    if config.bot.mode == "webhook":
        _check_webhook(config, resolve_secret(config.bot.webhook_secret, environ))


def _check_webhook(config: Config, secret: str) -> None:
    bot = config.bot
    url = urlsplit(bot.webhook_url)
    loopback = url.scheme == "http" and url.hostname in LOOPBACK
    if not (url.scheme == "https" and url.hostname) and not loopback:
        raise BotError(f"{config.path}: [bot] webhook_url must be an https:// URL in webhook mode")
    if not secret or len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret):
        raise BotError(
            f"{config.path}: [bot] webhook_secret must be 1-256 of A-Z a-z 0-9 _ - in webhook mode"
        )
    try:
        parse_listen(bot.webhook_listen)
    except WebError:
        raise BotError(
            f'{config.path}: [bot] webhook_listen must be "host:port", got {bot.webhook_listen!r}'
        ) from None


__all__ = [
    "BotError",
    "TelegramBot",
    "check_bot_settings",
    "message_text",
    "read_update",
    "resolve_secret",
    "update_fields",
]
