"""The offline verifier page: its verdicts in Chromium, its trust root embedding, kopir verifier."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import threading
import time
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import signing
from kopir.signcmd import find_links
from kopir.verifier import VerifierError, content_security_policy, render_verifier
from signing.minisign import SecretKey
from signing.trust import TrustKey, TrustRoot
from tests.chromium import ARTIFACTS, Browser, ChromiumError
from tests.cli import kopir
from tests.kopir.verifierhelpers import RELAY, THRESHOLDS, browser, keys, page_file, root

__all__ = ["browser", "keys", "page_file", "root"]  # the fixtures, used by name


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
    assert tab.evaluate("document.getElementById('trust-expired').hidden") is True
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


def test_an_expired_trust_root_is_pointed_out(
    browser: Browser, keys: dict[str, SecretKey], tmp_path: Path
) -> None:
    alice = TrustKey("alice", keys["alice"].public_key, frozenset({"root", "lists", "links"}))
    old = TrustRoot(1, "2021-03-01T00:00:00Z", (alice,), THRESHOLDS)
    path = tmp_path / "old.html"
    path.write_text(render_verifier(old.encode()), encoding="utf-8")
    tab = browser.new_page()
    tab.goto(path.as_uri() + "#lang=ru", offline=True)
    warning = tab.evaluate(
        "(() => { const w = document.getElementById('trust-expired');"
        " return [w.hidden, w.textContent]; })()"
    )
    expired = "Корень доверия этой страницы истёк 2021-03-01 00:00 UTC."
    assert warning == [False, expired + " Найдите более новую копию страницы."]
    tab.screenshot(ARTIFACTS / "verifier-expired-trust-root-ru.png")


def test_served_over_loopback_http_it_works_and_outside_stays_unreachable(
    browser: Browser, page_file: Path, keys: dict[str, SecretKey]
) -> None:
    """As the web app serves it at /verify; tests/chromium.py reaches 127.0.0.1 and nothing else."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(page_file.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tab = browser.new_page()
        url = f"http://127.0.0.1:{server.server_address[1]}/{page_file.name}"
        tab.goto(url)
        [box] = check_text(tab, signed(keys["alice"]))
        assert box["verdict"] == "valid" and tab.requests() == [url]
        with pytest.raises(
            ChromiumError, match="ERR_PROXY_CONNECTION_FAILED|ERR_NAME_NOT_RESOLVED"
        ):
            tab.goto("http://example.com/")
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


# -- the page in Python: the trust root refused or embedded safely ------------------------------


class _Scripts(HTMLParser):
    """The text of each <script>, <style> and CSP meta tag, as a browser's parser splits them."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[str, dict[str, str | None], str]] = []
        self.csp: list[str | None] = []
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            self.blocks.append((tag, dict(attrs), ""))
        elif tag == "meta" and dict(attrs).get("http-equiv") == "Content-Security-Policy":
            self.csp.append(dict(attrs).get("content"))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            tag, attrs, text = self.blocks[-1]
            self.blocks[-1] = (tag, attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def parse_page(html: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    return parser


def csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_allows_only_its_own_inline_script_and_style(root: TrustRoot) -> None:
    page = parse_page(render_verifier(root.encode()))
    [(_, _, style), (_, data_attrs, _), (_, script_attrs, script)] = page.blocks
    assert data_attrs == {"type": "application/json", "id": "kopir-trust"}
    assert script_attrs == {}
    [policy] = page.csp
    assert policy == content_security_policy()
    assert policy == (
        f"default-src 'none'; script-src {csp_hash(script)}; style-src {csp_hash(style)}; "
        "base-uri 'none'; form-action 'none'"
    )
    assert not re.search(r"https?://(?!t\.me|telegram\.me|telegram\.dog)", script + style)


_names = st.text(min_size=1, max_size=30) | st.sampled_from(
    ["</script>", "</SCRIPT >", "<!--<script>", "]]>", "\u2028\u2029", "'\"&<>", "<\u0000"]
)


@settings(max_examples=60, deadline=None)
@given(names=st.lists(_names, min_size=1, max_size=3, unique=True), label=st.text(max_size=20))
def test_any_valid_trust_root_is_embedded_exactly_and_inertly(names: list[str], label: str) -> None:
    keys = tuple(
        TrustKey(name, SecretKey.generate().public_key, frozenset({"root", "lists", "links"}))
        for name in names
    )
    data = TrustRoot(3, "2099-01-01T00:00:00Z", keys, THRESHOLDS).encode()
    html = render_verifier(data, label)
    assert html.lower().count("</script") == 2  # the two script elements' own end tags
    page = parse_page(html)
    [embedded] = [text for tag, attrs, text in page.blocks if attrs.get("id") == "kopir-trust"]
    assert json.loads(embedded) == {
        "root": json.loads(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert not re.search(r"[<>&]", embedded)


def _valid_trust(key: SecretKey) -> bytes:
    links = TrustKey("alice", key.public_key, frozenset({"root", "lists", "links"}))
    return TrustRoot(1, "2099-01-01T00:00:00Z", (links,), THRESHOLDS).encode()


_VALID = _valid_trust(SecretKey.generate())


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.integers(0, len(_VALID) - 1), st.binary(min_size=1, max_size=3)).map(
            lambda t: _VALID[: t[0]] + t[1] + _VALID[t[0] + len(t[1]) :]
        ),
        st.integers(1, len(_VALID) - 1).map(lambda n: _VALID[:n]),
    )
)
def test_anything_but_a_valid_trust_root_is_refused_with_a_reason(data: bytes) -> None:
    try:
        signing.parse_trust_root(data)
    except signing.SigningError as exc:
        with pytest.raises(VerifierError) as refused:
            render_verifier(data)
        message = str(refused.value)
        assert message.startswith("cannot build the verifier page from this trust root: ")
        assert str(exc) in message and "trust.json" in message and "\n" not in message
    else:
        assert json.loads(data)["keys"]  # a mutation that kept it valid: embedded as usual
        assert "kopir-trust" in render_verifier(data)


def test_the_label_is_escaped(root: TrustRoot) -> None:
    html = render_verifier(root.encode(), '<img src="x">&')
    assert "<time>&lt;img src=&quot;x&quot;&gt;&amp;</time>" in html
    assert "<time>" not in render_verifier(root.encode())


# -- kopir verifier ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's key and a trust root in a config's data dir."""
    home = tmp_path_factory.mktemp("verifiercmd")
    data = home / "data"
    assert kopir("keys", "generate", "--name", "alice", "--out", data / "keys").returncode == 0
    made = kopir(
        "trust", "init", "--out", data / "trust.json", f"--key={data}/keys/alice.pub",
        "--sign", data / "keys/alice.key",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (home / "config.toml").write_text('[signing]\nkey = "keys/alice.key"\ntrust = "trust.json"\n')
    return home


def test_cli_writes_a_page_that_verifies_in_chromium(ops: Path, browser: Browser) -> None:
    out = ops / "verify.html"
    done = kopir("verifier", "--out", out, "-c", ops / "config.toml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}: offline verifier for trust root v1 (link keys: alice)\n"
    assert done.stderr == ""
    key = signing.load_secret_key(ops / "data/keys/alice.key")
    tab = browser.new_page()
    tab.goto(out.as_uri() + "#lang=kk", offline=True)
    [box] = check_text(tab, "Жаңа прокси: " + signed(key))
    tab.screenshot(ARTIFACTS / "verifier-cli-page-kk.png")
    assert box["verdict"] == "valid" and "Сенімді: alice кілтімен қол қойылған" in box["text"]
    assert_offline_and_clean(tab, browser)


def test_cli_json_and_explicit_trust(ops: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.html"
    done = kopir("verifier", "--out", out, "--trust", ops / "data/trust.json", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "out": str(out), "trust": str(ops / "data/trust.json"), "version": 1, "keys": ["alice"],
    }  # fmt: skip
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_cli_refuses_a_bad_trust_root_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "trust.json"
    bad.write_text('{"format": "kopir-trust/1"}')
    out = tmp_path / "v.html"
    done = kopir("verifier", "--out", out, "--trust", bad)
    assert done.returncode == 2
    assert done.stderr.startswith(f"kopir: {bad}: cannot build the verifier page from this trust")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not out.exists()
    missing = kopir("verifier", "--out", out, "--trust", tmp_path / "nope.json")
    assert missing.returncode == 1 and "cannot read trust root" in missing.stderr
    assert missing.stderr.count("\n") == 1 and not out.exists()
