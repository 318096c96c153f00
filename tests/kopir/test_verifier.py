"""The offline verifier page in headless Chromium with no network: verdicts for good and bad
links through WebCrypto and through the pure-JS fallback, its Ed25519 and SHA-512 against
RFC 8032, FIPS 180-4 and ``cryptography``, its link parser against ``signing.link`` (hypothesis),
and the page's embedding of the trust root, in Python and through ``kopir verifier``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import signing
from kopir.signcmd import find_links
from kopir.verifier import VerifierError, content_security_policy, render_verifier
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot
from tests.chromium import ARTIFACTS, Browser
from tests.cli import kopir

SECRET = "ee" + "0123456789abcdef" * 2 + b"example.com".hex()
RELAY = f"https://t.me/proxy?server=relay.example&port=443&secret={SECRET}"
REVOKED = "2024-06-01T00:00:00Z"
THRESHOLDS = {"root": 1, "lists": 1, "links": 1, "log": 1}
L = 2**252 + 27742317777372353535851937790883648493
SLOW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- keys, trust root, page ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, SecretKey]:
    """alice signs links; bob did until he was revoked; carol signs lists only; mallory is no one."""
    return {name: SecretKey.generate() for name in ("alice", "bob", "carol", "mallory")}


@pytest.fixture(scope="module")
def root(keys: dict[str, SecretKey]) -> TrustRoot:
    roles = frozenset({"root", "lists", "links"})
    return TrustRoot(
        1,
        "2099-01-01T00:00:00Z",
        (
            TrustKey("alice", keys["alice"].public_key, roles),
            TrustKey("bob", keys["bob"].public_key, frozenset({"links"}), REVOKED),
            TrustKey("carol", keys["carol"].public_key, frozenset({"lists"})),
        ),
        THRESHOLDS,
    )


@pytest.fixture(scope="module")
def page_file(root: TrustRoot, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verifier") / "verify.html"
    path.write_text(render_verifier(root.encode(), "2026-01-05 12:00 UTC"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Any:
    with Browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(browser: Browser, page_file: Path) -> Any:
    """A tab with the verifier loaded offline, for calling its functions directly."""
    tab = browser.new_page()
    tab.goto(page_file.as_uri(), offline=True)
    return tab


def signed(key: SecretKey, expires_in: float = 72 * 3600, url: str = RELAY) -> str:
    return signing.sign_link(url, key, time.time() + expires_in).url("tme")


# -- verdicts in the page ------------------------------------------------------------------------


def check_text(tab: Any, text: str) -> list[dict[str, Any]]:
    """Paste ``text`` into the form, press Check, and read every verdict box back."""
    before = tab.evaluate("Number(document.getElementById('verdict').dataset.checks || 0)")
    tab.evaluate(f"document.getElementById('message').value = {json.dumps(text)}; 0")
    tab.evaluate("document.getElementById('check').click(); 0")
    tab.wait_for(f"Number(document.getElementById('verdict').dataset.checks || 0) > {before}")
    return list(
        tab.evaluate(
            """Array.from(document.querySelectorAll('#verdict .result'), (box) => ({
                verdict: box.dataset.verdict,
                text: box.innerText,
                buttons: Array.from(box.querySelectorAll('a.open'), (a) => a.href),
            }))"""
        )
    )


def cases(keys: dict[str, SecretKey]) -> dict[str, tuple[str, str, str]]:
    """Case name: (pasted text, expected verdict, words the English verdict must contain)."""
    good = signed(keys["alice"])
    return {
        "valid": (good, "valid", "Trusted: signed by alice"),
        "expired": (signed(keys["alice"], -7200), "expired", "Expired"),
        "unknown-key": (signed(keys["mallory"]), "unknown-key", "Unknown key"),
        "revoked-key": (signed(keys["bob"]), "revoked-key", "Key bob was withdrawn on 2024-06-01"),
        "tampered": (good.replace("relay.example", "relay.examp1e"), "bad-signature", "Tampered"),
        "lists-only-key": (signed(keys["carol"]), "unknown-key", "Unknown key"),
        "malformed-port": (good.replace("port=443", "port=0443"), "malformed", "leading zeros"),
        "unsigned": (RELAY, "malformed", "link is not signed"),
        "cyrillic-sms": (
            f"Сәлем! Telegram жұмыс істемесе, мына сілтемені ашыңыз: {good}. "
            "Ссылка действует 3 дня, не пересылайте её.",
            "valid",
            "Trusted: signed by alice",
        ),
        "no-link": ("Привет, это просто текст без ссылки.", "none", "No proxy link found"),
    }


def open_page(browser: Browser, page_file: Path, engine: str, lang: str = "en") -> Any:
    tab = browser.new_page(width=720, height=900)
    url = f"{page_file.as_uri()}#lang={lang}" + ("&engine=js" if engine == "js" else "")
    tab.goto(url, offline=True)
    assert tab.evaluate("navigator.onLine") is False
    assert tab.wait_for("document.body.dataset.engine") == engine
    return tab


def assert_offline_and_clean(tab: Any, browser: Browser) -> None:
    """The page asked for nothing but itself, and logged no error or CSP violation."""
    [own] = tab.requests()
    assert own.startswith("file://"), own
    assert tab.evaluate("performance.getEntriesByType('resource').length") == 0
    assert tab.problems() == [], browser.log()[-2000:]


@pytest.mark.parametrize("engine", ["webcrypto", "js"])
def test_verdicts_offline(
    browser: Browser, page_file: Path, keys: dict[str, SecretKey], engine: str
) -> None:
    tab = open_page(browser, page_file, engine)
    for name, (text, verdict, words) in cases(keys).items():
        [box] = check_text(tab, text)
        tab.screenshot(ARTIFACTS / f"verifier-{engine}-{name}.png")
        assert box["verdict"] == verdict, (name, box)
        assert words in box["text"], (name, box)
        if verdict == "valid":
            [link] = find_links(text)
            assert box["buttons"] == [signing.parse_link(link).url("tg")]
        else:
            assert box["buttons"] == [], name
    assert_offline_and_clean(tab, browser)


def test_every_link_of_an_sms_gets_its_own_verdict(
    browser: Browser, page_file: Path, keys: dict[str, SecretKey]
) -> None:
    good, forged = signed(keys["alice"]), signed(keys["mallory"])
    tab = open_page(browser, page_file, "webcrypto", lang="ru")
    sms = f"Прокси 1: {forged}\nПрокси 2: {good}!"
    boxes = check_text(tab, sms)
    tab.screenshot(ARTIFACTS / "verifier-two-links-ru.png")
    assert [b["verdict"] for b in boxes] == ["unknown-key", "valid"]
    assert "Ссылка 1 из 2: Неизвестный ключ" in boxes[0]["text"] and boxes[0]["buttons"] == []
    assert "Надёжная: подписана ключом alice" in boxes[1]["text"]
    assert boxes[1]["buttons"] == [signing.parse_link(good).url("tg")]
    assert_offline_and_clean(tab, browser)


def test_the_verdict_is_announced_and_follows_the_language(
    browser: Browser, page_file: Path, keys: dict[str, SecretKey]
) -> None:
    tab = open_page(browser, page_file, "webcrypto")
    region = tab.evaluate(
        """(() => { const r = document.getElementById('verdict');
        return [r.getAttribute('role'), r.getAttribute('aria-live'), r.getAttribute('aria-atomic'),
                document.querySelector('label[for=message]').textContent]; })()"""
    )
    assert region == ["status", "polite", "true", "SMS text or link"]
    check_text(tab, signed(keys["alice"], -7200))
    tab.evaluate("document.querySelector('[data-lang=kk]').click(); 0")
    texts = tab.evaluate(
        "[document.documentElement.lang, document.querySelector('h1').textContent,"
        " document.getElementById('verdict').innerText,"
        " document.querySelector('[data-lang=kk]').getAttribute('aria-pressed')]"
    )
    tab.screenshot(ARTIFACTS / "verifier-expired-kk.png")
    assert texts[:2] == ["kk", "Telegram прокси сілтемесін тексеру"]
    assert "Мерзімі өтті" in texts[2] and texts[3] == "true"


def test_keyboard_alone_checks_a_link(
    browser: Browser, page_file: Path, keys: dict[str, SecretKey]
) -> None:
    tab = open_page(browser, page_file, "js")
    tab.evaluate("document.getElementById('message').focus(); 0")
    tab.send("Input.insertText", {"text": signed(keys["alice"])})
    for key, code in (("Tab", 9), ("Enter", 13)):
        event = {"key": key, "code": key, "windowsVirtualKeyCode": code}
        text = {"text": "\r"} if key == "Enter" else {}
        tab.send("Input.dispatchKeyEvent", {"type": "keyDown", **event, **text})
        tab.send("Input.dispatchKeyEvent", {"type": "keyUp", **event})
    assert tab.evaluate("document.activeElement.id") == "check"
    tab.wait_for("document.getElementById('verdict').dataset.checks === '1'")
    assert tab.evaluate("document.querySelector('#verdict .result').dataset.verdict") == "valid"
    tab.evaluate("document.querySelector('#verdict a.open').focus(); 0")
    tab.screenshot(ARTIFACTS / "verifier-keyboard-focus.png")
