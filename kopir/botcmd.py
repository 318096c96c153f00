"""``kopir bot run``: the Telegram bot alone (``kopir run`` also runs it when a token is set).

It prepares the data directory as ``kopir run`` does, then runs the bot until SIGTERM or
SIGINT. Operators' /publish runs a publisher round here, in this process; messages that
/broadcast queues are sent by the SMS worker of ``kopir run`` (or ``kopir sms``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from kopir.bot import BotError, Sources, make_bot, resolve_secret
from kopir.config import Config, ConfigError, load_config
from kopir.output import CommandFailed
from kopir.publisher import Publisher, RoundReport
from kopir.runner import _daemon_logging, prepare, publish_checkpoint, say, with_relay_secret
from kopir.smscmd import number_key
from kopir.web import StatusError, StatusHistory


async def run_bot(config: Config) -> int:
    if not resolve_secret(config.bot.token, os.environ):
        raise CommandFailed(
            f"{config.path}: [bot] token is empty or its variable is not set: no bot to run", 2
        )
    _daemon_logging()
    setup = prepare(config)
    config = with_relay_secret(config)
    try:
        history = StatusHistory(config.web.history)
    except StatusError as exc:
        raise ConfigError(f"{config.path}: [web] history: {exc}") from None
    publisher = Publisher(
        config, key=setup.key, log_store=setup.log, number_key=number_key(config),
        on_round=lambda report, now: history.record_probe(report.results, now),
    )  # fmt: skip

    async def publish(now: float) -> RoundReport:
        report = await publisher.round(now)
        publish_checkpoint(setup)
        return report

    try:
        bot = make_bot(config, Sources(history, publish, setup.key))
    except BotError as exc:
        raise ConfigError(str(exc)) from None
    assert bot is not None  # the token was checked above
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    say(f"kopir bot: {config.bot.mode}, data in {config.data_dir}")
    if not await bot.run(stop):
        raise CommandFailed("Telegram refused [bot] token: check it with @BotFather")
    say("kopir bot: stopped")
    return 0


def bot_run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    return asyncio.run(run_bot(config))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    bot = sub.add_parser("bot", help="the Telegram bot")
    actions = bot.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", parents=[common], help="run the bot alone until SIGTERM")
    run.add_argument("-c", "--config", default="config.toml", help="config file (TOML)")
    run.set_defaults(func=bot_run)


__all__ = ["add_parsers", "run_bot"]
