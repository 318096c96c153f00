"""The Telegram bot (DESIGN.md §6 "Telegram bot"): signed proxies for citizens who already have
Telegram, verdicts on forwarded links, and an operator console.

- :mod:`kopir.bot.texts`: every reply in kk, ru and en;
- :mod:`kopir.bot.replies`: the pure parts (commands, verdicts, splitting, flood control);
- :mod:`kopir.bot.citizen` and :mod:`kopir.bot.console`: what the commands do;
- :mod:`kopir.bot.logic`: the dispatcher, a message in and a reply (or silence) out;
- :mod:`kopir.bot.app`: python-telegram-bot around it (polling or webhook, job queue).

``kopir run`` starts it when ``[bot] token`` is set; ``kopir bot run`` runs it alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kopir.bot.app import BotError, TelegramBot, check_bot_settings, resolve_secret
from kopir.bot.console import Sources
from kopir.bot.logic import BotLogic
from kopir.bot.replies import Incoming, Reply
from kopir.bot.store import StoreError
from kopir.config import Config


def make_bot(
    config: Config, sources: Sources, environ: Mapping[str, str] | None = None
) -> TelegramBot | None:
    """The bot for ``config``, or None when ``[bot] token`` is empty or its variable unset.
    A config that cannot work raises ``BotError``."""
    environ = os.environ if environ is None else environ
    if not resolve_secret(config.bot.token, environ):
        return None
    try:
        logic = BotLogic(config, sources)
    except StoreError as exc:
        raise BotError(str(exc)) from None
    return TelegramBot(config, logic, environ)


__all__ = [
    "BotError",
    "BotLogic",
    "Incoming",
    "Reply",
    "Sources",
    "TelegramBot",
    "check_bot_settings",
    "make_bot",
    "resolve_secret",
]
