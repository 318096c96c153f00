"""The bot's webhook (``[bot] mode = "webhook"``) on bad input, over real sockets on 127.0.0.1:
a secret header that is not UTF-8 is a wrong secret (403), a body that is not a Telegram update
is a 400 with one log line and no traceback, and the bot keeps serving. Raw bytes go through
``raw_request`` (aiohttp's client will not send ``\\xff`` in a header)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kopir.bot import TelegramBot
from kopir.bot.app import SECRET_HEADER
from tests.kopir.botsite import CITIZEN, bot_template
from tests.kopir.fakebotapi import FakeBotApi
from tests.kopir.test_bot import running
from tests.smsgw.test_webhook_headers import raw_request
from tests.strategies import mutated

__all__ = ["bot_template"]  # the fixture, used by name

SECRET = "s3cret_webhook-token"
MODE = {
    "mode": "webhook",
    "webhook_listen": "127.0.0.1:0",
    "webhook_url": "http://127.0.0.1/tg/hook",
    "webhook_secret": SECRET,
}
PATH = b"/tg/hook"
RIGHT = [(SECRET_HEADER.encode(), SECRET.encode()), (b"Content-Type", b"application/json")]
NUMBER = "+77012345678"


def message(user: int, text: object, **extra: Any) -> dict[str, Any]:
    return {
        "message_id": 1,
        "date": int(time.time()),
        "chat": {"id": user, "type": "private"},
        "from": {"id": user, "is_bot": False, "first_name": "U"},
        "text": text,
        **extra,
    }


def update(user: int, text: object, **extra: Any) -> bytes:
    return json.dumps({"update_id": 1, "message": message(user, text, **extra)}).encode()


def nested(depth: int) -> bytes:
    """A message quoting a message quoting ... ``depth`` deep."""
    inner: dict[str, Any] = message(CITIZEN, NUMBER)
    for _ in range(depth):
        inner = message(CITIZEN, NUMBER, reply_to_message=inner)
    return json.dumps({"update_id": 1, "message": inner}).encode()


BAD_BODIES = [
    b"null",
    b"[]",
    b"1",
    b'"update"',
    b"{}",
    b"[" * 2000,
    b"{" * 100_000,
    b"\xff",
    b'{"update_id": "1"}',
    b'{"update_id": true}',
    b'{"update_id": -1}',
    b'{"update_id": 1, "message": []}',
    b'{"update_id": 1, "message": {}}',
    update(CITIZEN, NUMBER, entities=[[]]),
    update(CITIZEN, NUMBER, entities=[{"type": "url", "offset": 0, "length": 1, "url": 5}]),
    update(CITIZEN, 5),
    update(CITIZEN, NUMBER, date=10**300),
    update(CITIZEN, NUMBER, date="yesterday"),
    update(CITIZEN, NUMBER, chat={"id": [CITIZEN], "type": "private"}),
    update(CITIZEN, NUMBER, **{"from": {"id": {}, "is_bot": False, "first_name": "U"}}),
    update(CITIZEN, NUMBER, photo=5),
    json.dumps({"update_id": 1, "callback_query": {"id": "1", "from": 5}}).encode(),
    nested(800),
]


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None and record.levelno < logging.ERROR, record.getMessage()
        assert NUMBER not in record.getMessage() and "+7701" not in record.getMessage()


@pytest.mark.asyncio
async def test_bad_secret_bytes_and_bad_bodies_are_4xx_and_the_bot_keeps_serving(
    bot_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(bot_template, tmp_path, **MODE) as (api, telegram, _config):
        url = f"http://127.0.0.1:{telegram.webhook_port()}"
        help_me = update(CITIZEN, "/help")
        with caplog.at_level(logging.DEBUG):
            for given in (b"\xff", b"\xc3\xa9", SECRET.encode() + b"\xff", b"\xed\xa0\x80", b""):
                headers = [(SECRET_HEADER.encode(), given)]
                assert (await raw_request(url, PATH, headers, help_me))[0] == 403
            for body in BAD_BODIES:
                status, answer = await raw_request(url, PATH, RIGHT, body)
                assert status == 400, (body[:80], answer)
            gzipped = [*RIGHT, (b"Content-Encoding", b"gzip")]
            assert (await raw_request(url, PATH, gzipped, b"not gzip"))[0] == 400
            assert (await raw_request(url, PATH, RIGHT, help_me))[0] == 200
            assert (await api.wait_sent(CITIZEN, 1))[0].text.startswith("/proxy: your own")
        no_traceback(caplog)
        warnings = [r for r in caplog.records if r.name == "kopir.bot"]
        assert len(warnings) >= len(BAD_BODIES)
        assert all("\n" not in r.getMessage() for r in warnings)


# Fuzz: one bot for all the examples, on a private event loop ------------------------------


class BotHook:
    """The bot in webhook mode with its fake Bot API, run from a private event loop."""

    def __init__(self, template: Path, folder: Path) -> None:
        self.runner = asyncio.Runner()
        self._running = running(template, folder, **MODE)
        self.api: FakeBotApi
        self.telegram: TelegramBot
        self.api, self.telegram, _ = self.runner.run(self._running.__aenter__())
        self.url = f"http://127.0.0.1:{self.telegram.webhook_port()}"

    def post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        return self.runner.run(raw_request(self.url, PATH, headers, body))[0]

    def wait_sent(self, chat: int, count: int) -> None:
        self.runner.run(self.api.wait_sent(chat, count))

    def close(self) -> None:
        self.runner.run(self._running.__aexit__(None, None, None))
        self.runner.close()


@pytest.fixture(scope="module")
def bot_hook(bot_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotHook]:
    hook = BotHook(bot_template, tmp_path_factory.mktemp("bot-hook"))
    try:
        yield hook
    finally:
        hook.close()


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FUZZ_USER = 777_000


ids = st.integers(FUZZ_USER + 1, 2**40)
words = st.sampled_from(["/help", "/start", "/lang kk", "/verify x", "/report", NUMBER, "hi"])


def telegram_updates(junky: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Updates of the Bot API's shape; with ``junky``, any field may be junk instead."""

    def obj(
        good: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
    ) -> st.SearchStrategy[dict[str, Any]]:
        if junky:
            good = {k: v | junk for k, v in good.items()}
            optional = {k: v | junk for k, v in optional.items()}
        return st.fixed_dictionaries(good, optional=optional)

    users = obj(
        {"id": ids, "is_bot": st.booleans(), "first_name": st.just("U")},
        {"language_code": st.sampled_from(["en", "ru", "kk", "xx"])},
    )
    link = st.just("https://t.me/proxy?server=x&port=1&secret=00")
    entity = obj({"type": st.just("text_link"), "offset": st.just(0), "length": ids}, {"url": link})
    chat = obj({"id": ids, "type": st.sampled_from(["private", "group"])}, {})
    message = obj(
        {"message_id": st.integers(1, 10**6), "date": st.integers(0, 2**32 - 1), "chat": chat},
        {
            "from": users,
            "text": words,
            "caption": words,
            "entities": st.lists(entity, max_size=2),
            "reply_to_message": junk if junky else st.nothing(),
        },
    )
    query = obj(
        {"id": st.text(max_size=4), "from": users, "chat_instance": st.just("1")},
        {"data": st.text(max_size=10), "message": message},
    )
    return obj(
        {"update_id": st.integers(0, 2**31)},
        {"message": message, "callback_query": query, "poll": junk},
    )


GOOD = update(FUZZ_USER, "/help").decode()
right = telegram_updates(junky=False).map(lambda u: (True, json.dumps(u).encode()))
other = st.one_of(
    telegram_updates(junky=True).map(lambda u: json.dumps(u).encode()),
    junk.map(lambda j: json.dumps(j).encode()),
    mutated(GOOD, '{}[]":,0123456789').map(str.encode),
    st.binary(max_size=64),
)
bodies = st.one_of(right, other.map(lambda body: (False, body)))
"""(whether it is a well-formed update, the body)"""
raw_secrets = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
secrets = st.one_of(*[st.just(SECRET.encode())] * 4, raw_secrets)


def test_fuzz_webhook_never_gives_a_500_and_the_bot_keeps_serving(
    bot_hook: BotHook, caplog: pytest.LogCaptureFixture
) -> None:
    @settings(max_examples=200, deadline=None)
    @given(body=bodies, secret=secrets)
    def post(body: tuple[bool, bytes], secret: bytes) -> None:
        well_formed, content = body
        headers = [(SECRET_HEADER.encode(), secret), (b"Content-Type", b"application/json")]
        status = bot_hook.post(headers, content)
        assert status in (200, 400, 403)
        if secret != SECRET.encode():
            assert status in (400, 403)  # 400 only from aiohttp, for a control byte in a header
        elif well_formed:
            assert status == 200  # what Telegram sends is taken
        assert bot_hook.post(RIGHT, b'{"update_id": 1}') == 200  # still answering

    with caplog.at_level(logging.DEBUG):
        post()
        before = len(bot_hook.api.sent(FUZZ_USER))
        assert bot_hook.post(RIGHT, GOOD.encode()) == 200
        bot_hook.wait_sent(FUZZ_USER, before + 1)  # still serving: the last update is answered
    no_traceback(caplog)
    handler_errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bot: ")]
    assert not [m for m in handler_errors if not m.startswith("bot: webhook: ")], handler_errors
