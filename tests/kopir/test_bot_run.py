"""The bot inside ``kopir run``: one process with the relay, the publisher, the SMS worker and
the web app, talking to a fake Bot API server on loopback, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

import signing
from smsgw.outbox import read_outbox
from tests.cli import STATE_HOME, kopir
from tests.kopir.botsite import ADMIN, CITIZEN
from tests.kopir.fakebotapi import MAX_WAIT, FakeBotApi
from tests.kopir.test_run import WEB_PORTS, example_config


def with_bot(text: str, base_url: str) -> str:
    for old, new in [
        ('token = "env:KOPIR_BOT_TOKEN"', 'token = "123456:TEST-TOKEN"'),
        ("admins = []", f"admins = [{ADMIN}]"),
        ("new_account_threshold = 0", "new_account_threshold = 1000000"),
        ('base_url = "https://api.telegram.org/bot"', f'base_url = "{base_url}"'),
        ('poll_timeout = "30s"', 'poll_timeout = "2s"'),
        ('language = "ru"', 'language = "en"'),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.mark.asyncio
async def test_kopir_run_runs_the_bot_beside_the_web_app_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]
    async with FakeBotApi() as api:
        text = with_bot((root / "config.example.toml").read_text(), api.base_url)
        config = example_config(tmp_path, text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
        env.update(PYTHONIOENCODING="utf-8", XDG_STATE_HOME=STATE_HOME)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kopir.cli", "run", "-c", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            await api.wait_call("getUpdates")
            deadline = time.monotonic() + MAX_WAIT
            while len(read_outbox(tmp_path / "data/sms/outbox")) < 4:  # the first round is done
                assert time.monotonic() < deadline and proc.returncode is None
                await asyncio.sleep(0.1)

            await api.say(ADMIN, "/relays")
            relays = (await api.wait_sent(ADMIN, 1))[-1].text
            assert "1/1 healthy" in relays and "✅ local:local" in relays
            await api.say(CITIZEN, "/proxy")
            text_reply, photo = await api.wait_sent(CITIZEN, 2)
            trust = signing.parse_trust_root((tmp_path / "data/trust.json").read_bytes())
            link = text_reply.text.split("1. ", 1)[1].split("\n")[0]
            assert signing.verify_link(link, trust, time.time())
            assert photo.method == "sendPhoto" and photo.files["photo"].startswith(b"\x89PNG")

            site = f"http://127.0.0.1:{WEB_PORTS[config]}"
            async with aiohttp.ClientSession() as http, http.get(f"{site}/list.json") as got:
                assert got.status == 200
                assert await got.read() == (tmp_path / "data/lists/list.json").read_bytes()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), MAX_WAIT)
        polls = len([c for c in api.calls if c.method == "getUpdates"])
        await asyncio.sleep(0.5)
        assert len([c for c in api.calls if c.method == "getUpdates"]) == polls  # no more
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stderr
    assert "Telegram bot: polling, 1 operators" in stdout
    assert "kopir run: stopped" in stdout and "Traceback" not in stderr
    assert str(CITIZEN) not in stdout + stderr and "TEST-TOKEN" not in stdout + stderr


def test_bot_run_without_a_token_says_so_in_one_line(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    done = kopir("bot", "run", "-c", config)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "[bot] token is empty or its variable is not set" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing made for a bot that cannot run


async def bot_process(config: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")}
    env.update(PYTHONIOENCODING="utf-8", XDG_STATE_HOME=STATE_HOME)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kopir.cli", "bot", "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_kopir_bot_run_alone_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    async with FakeBotApi() as api:
        config = example_config(
            tmp_path, with_bot((root / "config.example.toml").read_text(), api.base_url)
        )
        proc = await bot_process(config)
        try:
            await api.say(CITIZEN, "/help")
            assert (await api.wait_sent(CITIZEN, 1))[0].text.startswith("/proxy: your own")
            await api.say(ADMIN, "/status")
            assert "no list yet (/publish makes one)" in (await api.wait_sent(ADMIN, 1))[0].text
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), MAX_WAIT)
    assert proc.returncode == 0, err.decode()
    assert "kopir bot: stopped" in out.decode() and "Traceback" not in err.decode()


@pytest.mark.asyncio
async def test_kopir_bot_run_with_a_refused_token_exits_with_one_line(tmp_path: Path) -> None:
    async with FakeBotApi(token="999:OTHER") as api:
        root = Path(__file__).resolve().parents[2]
        config = example_config(
            tmp_path, with_bot((root / "config.example.toml").read_text(), api.base_url)
        )
        proc = await bot_process(config)
        out, err = await asyncio.wait_for(proc.communicate(), MAX_WAIT)
    assert proc.returncode == 1, out.decode()
    assert err.decode().endswith("kopir: Telegram refused [bot] token: check it with @BotFather\n")
    assert "Traceback" not in err.decode() and "TEST-TOKEN" not in out.decode() + err.decode()
