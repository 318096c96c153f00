"""The bot through python-telegram-bot and a fake Bot API server on loopback: every command,
the QR codes read back by zbarimg, verdicts, operator commands hidden from others, /broadcast
with its confirmation, flood control and the webhook mode. Nothing reaches Telegram."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import signing
import smsgw
from kopir.bot import TelegramBot, make_bot
from kopir.config import Config
from kopir.listcmd import publisher_relays
from kopir.signcmd import find_links
from proxylist import Distributor, load_secret
from tests.kopir.botsite import ADMIN, CITIZEN, bot_sources, bot_template, site_config
from tests.kopir.fakebotapi import FakeBotApi
from tests.relay.test_relay_cli import free_port

__all__ = ["bot_template"]  # the fixture, used by name


@contextlib.asynccontextmanager
async def running(
    template: Path, tmp_path: Path, **bot: Any
) -> AsyncIterator[tuple[FakeBotApi, TelegramBot, Config]]:
    async with FakeBotApi() as api:
        config = site_config(template, tmp_path, api.base_url, **bot)
        telegram = make_bot(config, bot_sources(config), environ={})
        assert telegram is not None
        stop = asyncio.Event()
        task = asyncio.create_task(telegram.run(stop))
        await asyncio.wait_for(telegram.started.wait(), 30)
        try:
            yield api, telegram, config
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) is True


def trust_of(config: Config) -> signing.TrustRoot:
    return signing.parse_trust_root(config.in_data(config.signing.trust).read_bytes())


def zbar(png: bytes, tmp_path: Path) -> str:
    image = tmp_path / "qr.png"
    image.write_bytes(png)
    zbarimg = shutil.which("zbarimg")
    assert zbarimg is not None, "apt-get install zbar-tools"
    done = subprocess.run(
        [zbarimg, "--raw", "-q", str(image)], capture_output=True, check=True, timeout=60
    )
    return done.stdout.decode().strip()


@pytest.mark.asyncio
async def test_proxy_sends_signed_links_and_qr_codes_zbarimg_reads_back(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, config):
        await api.say(CITIZEN, "/proxy")
        sent = await api.wait_sent(CITIZEN, 3)
        text, photos = sent[0], sent[1:]
        assert text.method == "sendMessage" and [p.method for p in photos] == ["sendPhoto"] * 2
        assert text.params["link_preview_options"] == {"is_disabled": True}
        links = find_links(text.text)
        assert len(links) == 2 and "Valid until" in text.text
        trust = trust_of(config)
        for link, photo in zip(links, photos, strict=True):
            assert signing.verify_link(link, trust, time.time())
            assert zbar(photo.files["photo"], tmp_path) == link
            assert link in photo.text
        assert len({signing.parse_link(link).secret for link in links}) == 2

        await api.say(CITIZEN, "/proxy@kopir_test_bot")
        again = await api.wait_sent(CITIZEN, 6)
        assert find_links(again[3].text) == links  # same epoch, same hour: the same links


@pytest.mark.asyncio
async def test_links_are_verified_and_a_forged_one_is_explained_as_tampered(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, _config):
        await api.say(CITIZEN, "/proxy")
        link = find_links((await api.wait_sent(CITIZEN, 3))[0].text)[0]
        parsed = signing.parse_link(link)
        forged = link.replace(f"port={parsed.port}", f"port={parsed.port + 1}")
        assert forged != link

        await api.say(CITIZEN, f"Proxy from a friend: {forged}")
        reply = (await api.wait_sent(CITIZEN, 4))[-1].text
        assert "Tampered or forged" in reply and f"127.0.0.1:{parsed.port + 1}" in reply

        await api.say(CITIZEN, f"/verify {link}")
        assert "✅ Trustworthy: signed with the key" in (await api.wait_sent(CITIZEN, 5))[-1].text

        unsigned = link.split("&kid=")[0]
        hidden = [{"type": "text_link", "offset": 0, "length": 5, "url": forged}]
        await api.say(CITIZEN, f"{unsigned} and here", entities=hidden)
        both = (await api.wait_sent(CITIZEN, 6))[-1].text
        assert "Links found: 2" in both and "Not signed" in both and "Tampered" in both

        await api.say(CITIZEN, "/lang kk")
        assert (await api.wait_sent(CITIZEN, 7))[-1].text == "Енді жауаптар қазақ тілінде."
        await api.say(CITIZEN, forged)
        assert "⛔ Жалған" in (await api.wait_sent(CITIZEN, 8))[-1].text
        await api.say(CITIZEN, "hello")
        assert "прокси сілтемесі жоқ" in (await api.wait_sent(CITIZEN, 9))[-1].text


@pytest.mark.asyncio
async def test_start_help_and_lang_follow_the_users_language(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, _config):
        await api.say(CITIZEN, "/start", language="ru")
        assert "Этот бот выдаёт прокси" in (await api.wait_sent(CITIZEN, 1))[-1].text
        await api.say(CITIZEN, "/help", language="de")  # not ours: [bot] language (en here)
        assert (await api.wait_sent(CITIZEN, 2))[-1].text.startswith("/proxy: your own")
        await api.say(CITIZEN, "/lang")
        assert "/lang kk" in (await api.wait_sent(CITIZEN, 3))[-1].text
        await api.say(CITIZEN, "/lang ru", language="en")
        await api.say(CITIZEN, "/help", language="en")  # the choice wins over the app's
        assert (await api.wait_sent(CITIZEN, 5))[-1].text.startswith("/proxy: ваши прокси")
        menus = [c for c in api.calls if c.method == "setMyCommands"]
        admin_menu = [c for c in menus if c.params.get("scope", {}).get("chat_id") == ADMIN]
        assert len(menus) == 2 and len(admin_menu) == 1
        assert "status" not in str(menus[0].params["commands"])


@pytest.mark.asyncio
async def test_operator_commands_from_anyone_else_get_no_reply_at_all(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, config):
        version = config.in_data(config.publisher.dir) / "list.json"
        before = version.read_bytes()
        for command in ("/status", "/relays", "/publish", "/broadcast", "/reports", "/nosuch"):
            await api.say(CITIZEN, command)
        await api.press(CITIZEN, "bc:cancel")
        await api.say(CITIZEN, "/help")
        sent = await api.wait_sent(CITIZEN, 1)
        await asyncio.sleep(0)  # (the updates are handled in order: /help came last)
        assert len(api.sent(CITIZEN)) == 1 and sent[0].text.startswith("/proxy: your own")
        assert "/status" not in sent[0].text and "reply_markup" not in sent[0].params
        assert version.read_bytes() == before
        assert [c for c in api.calls if c.method == "answerCallbackQuery"]


@pytest.mark.asyncio
async def test_operator_status_relays_publish_and_reports(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, config):
        await api.say(ADMIN, "/status")
        status = (await api.wait_sent(ADMIN, 1))[-1].text
        assert "list v1: 3 relays, valid until" in status and "subscribers: 2" in status
        assert "SMS queue: " in status
        # The relays of the template ran only during its ``kopir run --once``: all down now.
        # (tests/kopir/test_bot_run.py asks /relays of a running ``kopir run``.)
        await api.say(ADMIN, "/relays")
        relays = (await api.wait_sent(ADMIN, 2))[-1].text
        assert "0/3 healthy" in relays and "❌ local:a: failed at connect" in relays
        await api.say(ADMIN, "/publish")
        published = (await api.wait_sent(ADMIN, 3))[-1].text
        assert published.startswith("probed 3 relays: 0 healthy; no list published: ")
        await api.say(ADMIN, "/reports")
        assert (await api.wait_sent(ADMIN, 4))[-1].text == "no relay has been reported dead"

        await api.say(CITIZEN, "/proxy")
        link = find_links((await api.wait_sent(CITIZEN, 3))[0].text)[0]
        await api.say(CITIZEN, "/report")
        assert "Send /report with" in (await api.wait_sent(CITIZEN, 4))[-1].text
        await api.say(CITIZEN, f"/report {link}")
        assert "Thank you" in (await api.wait_sent(CITIZEN, 5))[-1].text
        await api.say(CITIZEN, f"/report {link}")
        assert "already reported" in (await api.wait_sent(CITIZEN, 6))[-1].text
        stranger = "https://t.me/proxy?server=example.org&port=443&secret=" + "ab" * 16
        await api.say(CITIZEN, f"/report {stranger}")
        assert "not one of ours" in (await api.wait_sent(CITIZEN, 7))[-1].text

        await api.say(ADMIN, "/reports")
        reports = (await api.wait_sent(ADMIN, 5))[-1].text
        dist = config.distribution
        secret = load_secret(config.in_data(dist.secret))
        with Distributor(config.in_data(dist.record), secret, {}) as record:
            cohort = record.cohort(f"tg:{CITIZEN}")
        relay = next(
            r.name
            for r in publisher_relays(config)
            if r.port == signing.parse_link(link).port
            and r.secret_hex == signing.parse_link(link).secret
        )
        assert reports.startswith(f"{relay}: reported by 1, last ")
        assert cohort[:12] in reports and str(CITIZEN) not in reports
        await api.say(ADMIN, "/status")
        assert "relays reported dead: 1" in (await api.wait_sent(ADMIN, 6))[-1].text


def queued_for(config: Config, campaign_prefix: str) -> dict[str, list[int]]:
    """Each recipient's part numbers in campaigns starting with the prefix."""
    with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
        messages = queue.claim(10_000, time.time())
    found: dict[str, list[int]] = {}
    for m in messages:
        if m.campaign.startswith(campaign_prefix):
            found.setdefault(m.recipient_ref, []).append(m.part)
    return found


@pytest.mark.asyncio
async def test_broadcast_queues_one_message_per_subscriber_only_after_confirmation(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, config):
        await api.say(ADMIN, "/broadcast")
        asked = (await api.wait_sent(ADMIN, 1))[-1]
        assert "each of 2 subscribers" in asked.text
        buttons = asked.params["reply_markup"]["inline_keyboard"][0]
        send, cancel = (b["callback_data"] for b in buttons)
        assert send.startswith("bc:") and cancel == "bc:cancel"
        assert queued_for(config, "bot-") == {}  # nothing before the confirmation

        await api.press(ADMIN, send)
        done = (await api.wait_sent(ADMIN, 2))[-1].text
        assert "for 2 subscribers" in done
        queued = queued_for(config, "bot-")
        assert len(queued) == 2  # one message per subscriber ...
        for parts in queued.values():
            assert sorted(parts) == list(range(1, len(parts) + 1))  # ... each whole, once
        assert await api.wait_call("editMessageReplyMarkup")

        await api.press(ADMIN, send)  # a second press sends nothing more
        assert "no longer pending" in (await api.wait_sent(ADMIN, 3))[-1].text
        await api.say(ADMIN, "/broadcast")
        await api.wait_sent(ADMIN, 4)
        await api.press(ADMIN, "bc:cancel")
        assert "cancelled" in (await api.wait_sent(ADMIN, 5))[-1].text
        with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
            left = queue.counts_by_campaign()
        in_bot_campaigns = sum(sum(by.values()) for c, by in left.items() if c.startswith("bot-"))
        assert in_bot_campaigns == sum(len(parts) for parts in queued.values())  # none since


@pytest.mark.asyncio
async def test_broadcast_not_confirmed_in_time_is_withdrawn_by_the_job_queue(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path, broadcast_timeout=1.0) as (api, _, config):
        await api.say(ADMIN, "/broadcast")
        send = (await api.wait_sent(ADMIN, 1))[-1].params["reply_markup"]["inline_keyboard"][0]
        withdrawn = (await api.wait_sent(ADMIN, 2))[-1].text
        assert withdrawn == "broadcast not confirmed in time: nothing queued"
        await api.press(ADMIN, send[0]["callback_data"])
        assert "no longer pending" in (await api.wait_sent(ADMIN, 3))[-1].text
        assert queued_for(config, "bot-") == {}


@pytest.mark.asyncio
async def test_flood_control_warns_once_then_drops(bot_template: Path, tmp_path: Path) -> None:
    async with running(bot_template, tmp_path, flood_messages=3) as (api, _, _config):
        for _ in range(6):
            await api.say(CITIZEN, "/help")
        await api.say(ADMIN, "/help")  # handled after all six
        await api.wait_sent(ADMIN, 1)
        sent = [c.text for c in api.sent(CITIZEN)]
        assert len(sent) == 4 and sent[-1] == "Too many messages. Wait a minute, then try again."


@pytest.mark.asyncio
async def test_webhook_mode_checks_the_secret_and_answers(
    bot_template: Path, tmp_path: Path
) -> None:
    secret = "s3cret_webhook-token"
    mode = {
        "mode": "webhook",
        "webhook_listen": "127.0.0.1:0",
        "webhook_url": "http://127.0.0.1/tg/hook",
        "webhook_secret": secret,
    }
    async with running(bot_template, tmp_path, **mode) as (api, telegram, _config):
        hook = await api.wait_call("setWebhook")
        assert hook.params["url"] == mode["webhook_url"] and hook.params["secret_token"] == secret
        assert not [c for c in api.calls if c.method == "getUpdates"]
        url = f"http://127.0.0.1:{telegram.webhook_port()}/tg/hook"
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1, "date": int(time.time()), "text": "/help",
                "chat": {"id": CITIZEN, "type": "private"},
                "from": {"id": CITIZEN, "is_bot": False, "first_name": "U"},
            },
        }  # fmt: skip
        async with aiohttp.ClientSession() as http:
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "nope"}
            async with http.post(url, json=update, headers=wrong) as refused:
                assert refused.status == 403
            right = {"X-Telegram-Bot-Api-Secret-Token": secret}
            async with http.post(url, data=b"{not json", headers=right) as bad:
                assert bad.status == 400
            async with http.post(url, json=update, headers=right) as taken:
                assert taken.status == 200
        assert (await api.wait_sent(CITIZEN, 1))[0].text.startswith("/proxy: your own")


@pytest.mark.asyncio
async def test_telegram_out_of_reach_is_retried_until_stopped(
    bot_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/bot"  # nothing listens there
    config = site_config(bot_template, tmp_path, closed)
    telegram = make_bot(config, bot_sources(config), environ={})
    assert telegram is not None
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="kopir.bot"):
        task = asyncio.create_task(telegram.run(stop))
        for _ in range(600):  # at most about 30 s
            if "Telegram out of reach" in caplog.text or task.done():
                break
            await asyncio.sleep(0.05)
        assert "Telegram out of reach" in caplog.text and "retrying in 1 s" in caplog.text
        stop.set()
        assert await asyncio.wait_for(task, 30) is True
    assert not telegram.started.is_set() and "TEST-TOKEN" not in caplog.text
