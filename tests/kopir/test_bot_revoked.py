"""A link signed by a key the operators revoked, sent to the bot through a fake Bot API server
on loopback: the bot says the key is revoked and since when, in the reader's language, and
never that the link is trustworthy. The same link under the same trust root before the
revocation is the control: it must be called trustworthy, so the test fails if revocation
were ignored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import signing
from tests.kopir.botsite import CITIZEN, bot_template
from tests.kopir.test_bot import running, trust_of

__all__ = ["bot_template"]  # the fixture, used by name
HOUR = 3600.0


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@pytest.mark.asyncio
async def test_a_link_signed_by_a_revoked_key_is_explained_as_revoked(
    bot_template: Path, tmp_path: Path
) -> None:
    async with running(bot_template, tmp_path) as (api, _, config):
        key = signing.load_secret_key(config.in_data(config.signing.key))
        trust = trust_of(config)
        name = next(k.name for k in trust.keys if k.public_key.key_id == key.public_key.key_id)
        unsigned = "https://t.me/proxy?server=127.0.0.1&port=443&secret=" + "ab" * 16
        link = signing.sign_link(unsigned, key, time.time() + 3 * HOUR).url("tme")

        await api.say(CITIZEN, f"/verify {link}")
        valid = (await api.wait_sent(CITIZEN, 1))[-1].text
        assert f"✅ Trustworthy: signed with the key {name}" in valid
        assert "127.0.0.1:443" in valid and "Revoked" not in valid

        # The operator revokes the key (the root ``kopir trust revoke`` writes, less the version
        # bump and signatures, which the bot does not read); the bot reads trust.json afresh for
        # every message, so the very same link is now refused.
        path = config.in_data(config.signing.trust)
        when = time.time() - HOUR
        revoked = trust.with_revoked(name, rfc3339(when))
        shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
        partial = path.with_name(path.name + ".tmp")
        partial.write_bytes(revoked.encode())
        partial.replace(path)

        await api.say(CITIZEN, f"/verify {link}")
        english = (await api.wait_sent(CITIZEN, 2))[-1]
        assert "Links found: 1." in english.text and "127.0.0.1:443" in english.text
        expected = f"⛔ Revoked key: the key {name} was revoked on {shown}. Do not use this link."
        assert expected in english.text
        assert "✅" not in english.text and "open it in Telegram" not in english.text
        assert "reply_markup" not in english.params

        await api.say(CITIZEN, f"Прокси от друга: {link}", language="ru")
        russian = (await api.wait_sent(CITIZEN, 3))[-1]
        expected = f"⛔ Отозванный ключ: ключ {name} отозван {shown}. Не используйте эту ссылку."
        assert expected in russian.text
        assert "✅" not in russian.text and "открыть в Telegram" not in russian.text
        assert "reply_markup" not in russian.params
