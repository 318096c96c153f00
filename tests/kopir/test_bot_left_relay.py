"""The bot's /proxy and the operator's /broadcast after a relay of someone's set has left the
list, through python-telegram-bot and the fake Bot API server on loopback.

A user (or an SMS subscriber) was given a set. Then one relay of that set stops working: a real
probe finds it failing and list v2 is published without it, while it stays in the config
(``republish_without``). Asked again within ``[distribution] interval``, the rate limit gives
the same set again, and the bot signs links for all of it. Before f1582d1 a second /proxy
answered "There is no working proxy for you right now" and a /broadcast queued nothing ("no
relay named ..." in the log and in the operator's reply).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import signing
import smsgw
from kopir.config import Config
from kopir.signcmd import find_links
from smsgw.compose import LINK_TEMPLATE
from tests.kopir.botsite import ADMIN, CITIZEN, bot_template
from tests.kopir.fakebotapi import FakeBotApi
from tests.kopir.test_bot import running, trust_of, zbar
from tests.kopir.test_proxy_reply_left_relay import relay_of, republish_without, trouble

__all__ = ["bot_template"]  # the fixture, used by name


@pytest.mark.asyncio
async def test_proxy_again_after_a_relay_left_the_list_sends_the_same_set(
    bot_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running(bot_template, tmp_path) as (api, _, config):
        trust = trust_of(config)
        await api.say(CITIZEN, "/proxy")
        given = find_links((await api.wait_sent(CITIZEN, 3))[0].text)
        assert len(given) == 2
        names = [relay_of(config, link) for link in given]

        await republish_without(config, names[0])

        await api.say(CITIZEN, "/proxy")
        again = (await api.wait_sent(CITIZEN, 4))[3]
        links = find_links(again.text)
        assert links, (again.text, trouble(caplog))
        assert "You already got proxies recently, so these are the same ones." in again.text
        assert [relay_of(config, link) for link in links] == names  # the gone relay's too
        photos = (await api.wait_sent(CITIZEN, 6))[4:]
        assert [p.method for p in photos] == ["sendPhoto"] * 2
        for link, photo in zip(links, photos, strict=True):
            assert signing.verify_link(link, trust, time.time())
            assert zbar(photo.files["photo"], tmp_path) == link
    assert not trouble(caplog)


async def broadcast(api: FakeBotApi, config: Config) -> tuple[str, dict[str, str]]:
    """An operator's /broadcast, confirmed: the bot's last word, and the link queued for each
    subscriber (by keyed reference)."""
    before = len(api.sent(ADMIN))
    await api.say(ADMIN, "/broadcast")
    asked = (await api.wait_sent(ADMIN, before + 1))[-1]
    send = asked.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await api.press(ADMIN, send)
    done = (await api.wait_sent(ADMIN, before + 2))[-1].text
    campaign = "bot-" + send.removeprefix("bc:")
    with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
        messages = queue.claim(10_000, time.time())
    texts: dict[str, str] = {}
    for m in sorted(messages, key=lambda m: (m.recipient_ref, m.part)):
        if m.campaign == campaign:
            texts[m.recipient_ref] = texts.get(m.recipient_ref, "") + m.text
    template = LINK_TEMPLATE.format(link="")
    assert all(t.startswith(template) for t in texts.values()), texts
    return done, {ref: t.removeprefix(template) for ref, t in texts.items()}


@pytest.mark.asyncio
async def test_broadcast_after_a_relay_left_the_list_sends_each_subscriber_their_relay(
    bot_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running(bot_template, tmp_path) as (api, _, config):
        trust = trust_of(config)
        done, first = await broadcast(api, config)
        assert "for 2 subscribers" in done and len(first) == 2
        relays = {ref: relay_of(config, link) for ref, link in first.items()}
        gone = sorted(relays.values())[0]

        await republish_without(config, gone)

        done, again = await broadcast(api, config)
        assert "for 2 subscribers" in done, (done, trouble(caplog))
        # Each subscriber's own first relay again: for one of them, the relay that left.
        assert {ref: relay_of(config, link) for ref, link in again.items()} == relays
        for link in again.values():
            assert signing.verify_link(link, trust, time.time())
    assert not trouble(caplog)
