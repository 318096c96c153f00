"""The bot's logic without Telegram: reply splitting, commands, flood control, the texts in
three languages, every verdict, the distribution's rate limit, and hypothesis fuzzing of
message text (long, odd Unicode, many links) through the whole dispatcher."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import string
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import signing
from kopir.bot import BotLogic, Incoming
from kopir.bot.replies import MAX_MESSAGE, MAX_PARTS, Flood, parse_command, split_reply, verdict
from kopir.bot.texts import LANGUAGES, TEXTS
from kopir.config import Config, Duration
from kopir.signcmd import find_links
from proxylist import Ring, epoch_of, load_secret
from tests.kopir.botsite import (
    ADMIN,
    CITIZEN,
    SECRETS,
    THRESHOLD,
    bot_sources,
    bot_template,
    site_config,
)

__all__ = ["bot_template"]  # the fixture, used by name
HOUR = 3600.0


# -- pure parts ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20_000), st.integers(10, 5000), st.integers(1, 4))
def test_split_reply_keeps_every_part_within_the_limit(text: str, limit: int, parts: int) -> None:
    chunks = split_reply(text, limit, parts)
    assert 1 <= len(chunks) <= parts and all(0 < len(c) <= limit for c in chunks)
    if not chunks[-1].endswith("…") or text.rstrip().endswith("…"):
        assert "".join("".join(chunks).split()) == "".join(text.split())


def test_split_reply_breaks_at_lines_and_truncates_visibly() -> None:
    lines = [f"line {n:04d} " + "x" * 80 for n in range(200)]
    chunks = split_reply("\n".join(lines))
    assert len(chunks) == MAX_PARTS and all(len(c) <= MAX_MESSAGE for c in chunks)
    assert chunks[0].startswith("line 0000") and chunks[1].startswith("line 00")
    assert chunks[-1].endswith("…")
    assert split_reply("short") == ("short",) and split_reply("") == ("…",)


@pytest.mark.parametrize(
    ("message", "name", "argument"),
    [
        ("/proxy", "proxy", ""),
        ("/PROXY@kopir_test_bot  now ", "proxy", "now"),
        ("/verify https://t.me/proxy?x", "verify", "https://t.me/proxy?x"),
        ("/lang\nkk", "lang", "kk"),
    ],
)
def test_commands(message: str, name: str, argument: str) -> None:
    command = parse_command(message)
    assert command is not None and (command.name, command.argument) == (name, argument)


@pytest.mark.parametrize("message", ["proxy", " /proxy", "/", "/pro-xy", "hello /proxy", "/a/b"])
def test_free_text_is_not_a_command(message: str) -> None:
    assert parse_command(message) is None


def test_flood_allows_a_budget_per_window_warns_once_and_forgets() -> None:
    flood = Flood(limit=3, window=60)
    assert [flood.check(1, 100 + i) for i in range(6)] == ["ok"] * 3 + ["warn", "drop", "drop"]
    assert flood.check(2, 105) == "ok"  # another user has their own budget
    assert flood.check(1, 160) == "ok"  # the first message left the window
    flood.forget(1000)
    assert len(flood) == 0
    small = Flood(limit=1, window=60, max_tracked=10)
    for user in range(100):
        small.check(user, 0)
    assert len(small) == 10
    with pytest.raises(ValueError, match="flood limit"):
        Flood(0, 60)


def test_every_language_has_every_text_with_the_same_fields() -> None:
    fields = {
        key: {f for _, f, _, _ in string.Formatter().parse(value) if f}
        for key, value in TEXTS["en"].items()
    }
    for language in LANGUAGES:
        assert set(TEXTS[language]) == set(fields), language
        for key, value in TEXTS[language].items():
            found = {f for _, f, _, _ in string.Formatter().parse(value) if f}
            assert found == fields[key], (language, key)


# -- with a site -----------------------------------------------------------------------------


def logic_for(config: Config) -> BotLogic:
    return BotLogic(config, bot_sources(config))


def ask(logic: BotLogic, user: int, text: str, now: float) -> list[str]:
    reply = asyncio.run(logic.handle(Incoming(user, text, "en"), now))
    assert reply is not None
    return list(reply.texts)


def test_every_verdict_in_every_language(bot_template: Path, tmp_path: Path) -> None:
    config = site_config(bot_template, tmp_path)
    trust = signing.parse_trust_root(config.in_data(config.signing.trust).read_bytes())
    key = signing.load_secret_key(config.in_data(config.signing.key))
    now = time.time()
    unsigned = "https://t.me/proxy?server=127.0.0.1&port=443&secret=" + "ab" * 16
    good = signing.sign_link(unsigned, key, now + 3 * HOUR).url("tme")
    stranger = signing.SecretKey.generate()
    cases = {
        "valid": (good, now),
        "expired": (good, now + 10 * HOUR),
        "bad-signature": (good.replace("port=443", "port=444"), now),
        "unknown-key": (signing.sign_link(unsigned, stranger, now + HOUR).url("tg"), now),
        "unsigned": (unsigned, now),
        "malformed": ("tg://proxy?server=x&port=99999&secret=00", now),
    }
    marks = {"valid": "✅", "expired": "⌛", "bad-signature": "⛔", "unknown-key": "⚠️"}
    for language in LANGUAGES:
        for expected, (link, when) in cases.items():
            reason, line = verdict(link, trust, when, language)
            assert reason == ("malformed" if expected == "unsigned" else expected)
            assert line.startswith(marks.get(expected, "⚠️" if expected == "unsigned" else "❓"))
            assert "{" not in line and len(line) < 400


def test_the_rate_limit_holds_a_users_relays_until_the_interval_passes(
    bot_template: Path, tmp_path: Path
) -> None:
    config = site_config(bot_template, tmp_path)
    dist = dataclasses.replace(
        config.distribution, epoch=Duration(HOUR), interval=Duration(24 * HOUR)
    )
    config = dataclasses.replace(config, distribution=dist)
    secret = load_secret(config.in_data(dist.secret))
    names = ["local:a", "local:b", "local:c"]
    t0 = (time.time() // HOUR) * HOUR + 60
    later, next_day = t0 + 2 * HOUR, t0 + 25 * HOUR

    def ring(user: int, now: float) -> set[str]:
        return set(Ring.build(secret, names, epoch_of(now, HOUR)).assign(f"tg:{user}", 2))

    # A user whose fresh set changes between t0 and two hours later (a new epoch).
    user = next(u for u in range(1000, 2000) if ring(u, t0) != ring(u, later))
    logic = logic_for(config)
    secrets_by_name = {f"local:{name}": secret for name, secret in SECRETS.items()}

    def relays(texts: list[str]) -> set[str]:
        keys = {signing.parse_link(link).secret[2:34] for link in find_links(texts[0])}
        return {name for name, secret in secrets_by_name.items() if secret in keys}

    first = ask(logic, user, "/proxy", t0)
    assert relays(first) == ring(user, t0) and "same ones" not in first[0]
    held = ask(logic, user, "/proxy", later)
    assert relays(held) == ring(user, t0) != ring(user, later)
    assert "You already got proxies recently, so these are the same ones." in held[0]
    fresh = ask(logic, user, "/proxy", next_day)
    assert relays(fresh) == ring(user, next_day) and "same ones" not in fresh[0]


def test_new_accounts_draw_from_the_new_pool_only(bot_template: Path, tmp_path: Path) -> None:
    config = site_config(bot_template, tmp_path)
    logic = logic_for(config)
    # No relay is tagged "new" in this site, so a new account gets none, never an established one.
    reply = ask(logic, THRESHOLD + 1, "/proxy", time.time())
    assert reply == ["There is no working proxy for you right now. Try again later."]
    assert find_links(ask(logic, THRESHOLD, "/proxy", time.time())[0])


# -- fuzzing ---------------------------------------------------------------------------------

ODD = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(
        ["\u202e", "\u200b", "\ufeff", "\U0001f600", "ё", "қ", "\x00", "\r", "\n", "/", "&", "%"]
    ),
    max_size=300,
)


def link_strategy(good: str) -> st.SearchStrategy[str]:
    params = st.from_regex(re.compile(r"[A-Za-z0-9\-._~%&=:+/]{0,120}"), fullmatch=True)
    return st.one_of(
        st.just(good),
        st.builds(lambda i: good.replace("port=", f"port={i}"), st.integers(0, 99999)),
        st.builds(lambda p: f"tg://proxy?{p}", params),
        st.builds(lambda p: f"https://t.me/socks?{p}", params),
        st.builds(lambda n: good[:n], st.integers(0, len(good))),
    )


def test_fuzz_message_text_never_crashes_and_replies_fit_telegram(bot_template: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="kopir-bot-fuzz-"))
    config = site_config(bot_template, folder, flood_messages=1_000_000)
    logic = logic_for(config)
    key = signing.load_secret_key(config.in_data(config.signing.key))
    good = signing.sign_link(
        "https://t.me/proxy?server=127.0.0.1&port=443&secret=" + "ee" + "ab" * 16 + "6578",
        key, time.time() + 3 * HOUR,
    ).url("tme")  # fmt: skip
    pieces = st.lists(st.one_of(ODD, link_strategy(good)), max_size=40)
    prefixes = st.sampled_from(["", "/verify ", "/report ", "/lang ", "/proxy ", "/status "])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(prefixes, pieces, st.integers(0, 40_000), st.sampled_from([CITIZEN, ADMIN]))
    def run(prefix: str, parts: list[str], padding: int, user: int) -> None:
        message = prefix + " ".join(parts) + "я" * padding
        reply = asyncio.run(logic.handle(Incoming(user, message, "kk"), time.time()))
        if reply is None:
            return
        assert 1 <= len(reply.texts) <= MAX_PARTS
        assert all(0 < len(t) <= MAX_MESSAGE for t in reply.texts)
        assert all(len(p.caption) <= 1024 for p in reply.photos)

    run()


def test_many_links_are_counted_and_the_reply_still_fits(
    bot_template: Path, tmp_path: Path
) -> None:
    config = site_config(bot_template, tmp_path)
    logic = logic_for(config)
    link = "tg://proxy?server=" + "a" * 60 + ".example&port=443&secret=" + "ab" * 16
    texts = ask(logic, CITIZEN, "\n".join([link] * 50) + " " + "ж" * 9000, time.time())
    assert all(len(t) <= MAX_MESSAGE for t in texts) and len(texts) <= MAX_PARTS
    joined = "\n".join(texts)
    assert "Links found: 50." in joined and joined.count("Not signed") == 10
    assert "40 more links were not checked" in joined
