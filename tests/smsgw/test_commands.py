"""Inbound commands: words in three languages, STOP removes at once, replies rate-limited."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.commands import REPLIES, CommandHandler, RateLimit, parse


@pytest.mark.parametrize(
    ("text", "command", "language"),
    [
        ("PROXY", "proxy", "en"),
        ("proxy please", "proxy", "en"),
        ("Прокси", "proxy", "ru"),
        ("ПРОКСИ!", "proxy", "ru"),
        ("stop", "stop", "en"),
        ("СТОП", "stop", "ru"),
        ("стоп.", "stop", "ru"),
        ("help", "help", "en"),
        ("ПОМОЩЬ", "help", "ru"),
        ("КӨМЕК", "help", "kk"),
        ("көмек", "help", "kk"),
    ],
)
def test_commands_in_each_language(text: str, command: str, language: str) -> None:
    parsed = parse(text)
    assert (parsed.command, parsed.language, parsed.known) == (command, language, True)


def test_unknown_text_is_help_in_the_guessed_language() -> None:
    assert (parse("Сәлем, не істеу керек?").command, parse("Сәлем").language) == ("help", "kk")
    assert parse("Что делать?").language == "ru"
    assert parse("what now").language is None and not parse("what now").known
    assert parse("").command == "help"


class Store:
    def __init__(self) -> None:
        self.numbers = {"+77010000001": "kk", "+77010000002": "ru"}
        self.requests: list[tuple[str, str]] = []
        self.links: str | None = None

    def request_links(self, number: str, language: str) -> str | None:
        self.requests.append((number, language))
        return self.links

    def handler(self, interval: float = 300.0) -> CommandHandler:
        return CommandHandler(
            remove=lambda n: self.numbers.pop(n, None) is not None,
            language_of=self.numbers.get,
            request_links=self.request_links,
            ref=lambda n: "ref-" + n[-4:],
            limit=RateLimit(interval),
        )


def test_stop_removes_at_once_and_replies_in_the_subscribers_language() -> None:
    store = Store()
    outcome = store.handler().handle("+77010000001", "stop", 0.0)
    assert outcome.removed and "+77010000001" not in store.numbers
    assert outcome.reply == REPLIES["stop"]["kk"]


def test_proxy_requests_links_once_per_interval() -> None:
    store = Store()
    handler = store.handler(interval=300)
    assert handler.handle("+77010000002", "ПРОКСИ", 0.0).reply == REPLIES["proxy"]["ru"]
    assert handler.handle("+77010000002", "ПРОКСИ", 10.0).reply is None  # rate-limited
    assert handler.handle("+77010000002", "ПРОКСИ", 301.0).reply is not None
    assert store.requests == [("+77010000002", "ru"), ("+77010000002", "ru")]


def test_proxy_reply_is_the_links_the_application_returns() -> None:
    store = Store()
    store.links = "Telegram proxy: https://t.me/proxy?server=a&port=443&sig=x"
    outcome = store.handler().handle("+77010000001", "proxy", 0.0)
    assert outcome.reply == store.links
    assert store.requests == [("+77010000001", "kk")]  # the subscriber's language


def test_stop_is_honoured_even_when_replies_are_rate_limited() -> None:
    store = Store()
    handler = store.handler()
    handler.handle("+77010000002", "help", 0.0)
    outcome = handler.handle("+77010000002", "СТОП", 1.0)
    assert outcome.removed and outcome.reply is None
    assert "+77010000002" not in store.numbers


def test_rate_limit_memory_is_bounded() -> None:
    limit = RateLimit(interval=100, size=3)
    for i in range(10):
        assert limit.allow(f"r{i}", 0.0)
    assert len(limit._last) == 3


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=500))
def test_any_text_gets_a_reply_within_one_message(text: str) -> None:
    outcome = Store().handler().handle("+77019999999", text, 0.0)
    assert outcome.reply is not None and len(outcome.reply) <= 70 * 2
