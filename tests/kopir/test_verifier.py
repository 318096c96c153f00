"""The offline verifier page in headless Chromium with no network: verdicts for good and bad
links through WebCrypto and through the pure-JS fallback, its Ed25519 and SHA-512 against
RFC 8032, FIPS 180-4 and ``cryptography``, its link parser against ``signing.link`` (hypothesis),
and the page's embedding of the trust root, in Python and through ``kopir verifier``."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import threading
import time
from datetime import datetime
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
from tests.chromium import ARTIFACTS, Browser, ChromiumError
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
    """alice signs links; bob did until revoked; carol signs lists only; mallory is no one."""
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


# -- the fallback's Ed25519 and SHA-512 against RFC 8032, hashlib and cryptography ---------------

RFC8032 = [  # RFC 8032 §7.1, tests 1-3: (public key, message, signature)
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39"
        "701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f36"
        "13d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f7"
        "60984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]
JS_HEX = (
    "const h = (x) => Uint8Array.from(x.match(/../g) || [], (b) => parseInt(b, 16));"
    "const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');"
    "const sha = (m) => hex(kopirVerifier.sha512(h(m)));"
)


def with_hex(expression: str) -> str:
    """A JS expression evaluated with the hex helpers in scope (a fresh scope each time)."""
    return f"(() => {{ {JS_HEX} return ({expression}); }})()"


def python_verifies(public: str, message: str, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
    try:
        key.verify(bytes.fromhex(signature), bytes.fromhex(message))
    except InvalidSignature:
        return False
    return True


def browser_verifies(tab: Any, cases: list[tuple[str, str, str]]) -> list[list[bool]]:
    """Each case through the JS fallback and through WebCrypto: [[fallback, webcrypto], ...]."""
    return list(
        tab.evaluate(
            f"""(async () => {{ {JS_HEX}
            const engine = await kopirVerifier.chooseEngine(false);
            if (engine.name !== 'webcrypto') throw new Error('no WebCrypto Ed25519');
            const out = [];
            for (const [pk, msg, sig] of {json.dumps(cases)}) {{
                out.push([kopirVerifier.ed25519Verify(h(pk), h(sig), h(msg)),
                          await engine.verify(h(pk), h(sig), h(msg))]);
            }}
            return out; }})()"""
        )
    )


def flip(hex_text: str, bit: int) -> str:
    data = bytearray(bytes.fromhex(hex_text))
    data[bit // 8] ^= 1 << (bit % 8)
    return data.hex()


def s_plus_l(signature: str) -> str:
    """The same signature with S replaced by S + L: the same group element, non-canonical."""
    raw = bytes.fromhex(signature)
    s = int.from_bytes(raw[32:], "little") + L
    return (raw[:32] + s.to_bytes(32, "little")).hex()


def crypto_cases() -> list[tuple[str, str, str, bool]]:
    """(public key, message, signature, valid?): RFC 8032, random, and broken in many ways."""
    good: list[tuple[str, str, str, bool]] = [(*case, True) for case in RFC8032]
    for length in (0, 1, 31, 64, 111, 112, 127, 128, 129, 240, 300):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        data = os.urandom(length)
        good.append((public, data.hex(), key.sign(data).hex(), True))
    bad: list[tuple[str, str, str, bool]] = []
    for public, message, signature, _ in good:
        bad += [
            (public, message, flip(signature, 0), False),  # R
            (public, message, flip(signature, 254), False),  # R's top y bit
            (public, message, flip(signature, 256), False),  # S
            (public, message, flip(signature, 500), False),  # S's high bits
            (public, message, s_plus_l(signature), False),  # S >= L
            (flip(public, 3), message, signature, False),  # another key
            (public, (bytes.fromhex(message) + b"!").hex(), signature, False),
        ]
    return good + bad


def test_fallback_and_webcrypto_agree_with_rfc8032_and_cryptography(page: Any) -> None:
    cases = crypto_cases()
    expected = [valid for *_, valid in cases]
    assert [python_verifies(*case[:3]) for case in cases] == expected
    results = browser_verifies(page, [case[:3] for case in cases])
    assert [fallback for fallback, _ in results] == expected
    assert [webcrypto for _, webcrypto in results] == expected


def _on_curve(y: int) -> bool:
    p = 2**255 - 19
    d = -121665 * pow(121666, p - 2, p) % p
    x2 = (y * y - 1) * pow(d * y * y + 1, p - 2, p) % p
    return x2 == 0 or pow(x2, (p - 1) // 2, p) == 1


def test_point_decoding_refuses_non_canonical_and_off_curve_encodings(page: Any) -> None:
    p = 2**255 - 19
    off_curve = next(y for y in range(2, 100) if not _on_curve(y))
    on_curve = next(y for y in range(2, 100) if _on_curve(y))
    cases = {
        "identity": ((1).to_bytes(32, "little"), True),
        "identity with x sign bit": ((1 | 1 << 255).to_bytes(32, "little"), False),
        "y = p": (p.to_bytes(32, "little"), False),
        "y = p + 1": ((p + 1).to_bytes(32, "little"), False),
        "y = 2^255 - 1": ((2**255 - 1).to_bytes(32, "little"), False),
        "on the curve": (on_curve.to_bytes(32, "little"), True),
        "off the curve": (off_curve.to_bytes(32, "little"), False),
        "31 bytes": (bytes(31), False),
    }
    encodings = json.dumps([data.hex() for data, _ in cases.values()])
    decoded = page.evaluate(
        with_hex(f"{encodings}.map((e) => kopirVerifier.decodePoint(h(e)) !== null)")
    )
    assert dict(zip(cases, decoded, strict=True)) == {k: ok for k, (_, ok) in cases.items()}


def test_sha512_matches_hashlib_at_every_padding_boundary(page: Any) -> None:
    messages = [os.urandom(n) for n in range(0, 260)] + [b"abc", os.urandom(5000)]
    digests = page.evaluate(with_hex(f"{json.dumps([m.hex() for m in messages])}.map(sha)"))
    assert digests == [hashlib.sha512(m).hexdigest() for m in messages]
    assert digests[-2].startswith("ddaf35a193617aba")  # FIPS 180-4's "abc" example


@SLOW
@given(st.lists(st.binary(max_size=400), min_size=1, max_size=8))
def test_sha512_fuzzed(page: Any, messages: list[bytes]) -> None:
    digests = page.evaluate(with_hex(f"{json.dumps([m.hex() for m in messages])}.map(sha)"))
    assert digests == [hashlib.sha512(m).hexdigest() for m in messages]


# -- the page's link parser and verifier against signing.link (hypothesis) -----------------------

B64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PREFIXES = ["tg://proxy?", "https://t.me/proxy?", "TG://Proxy?", "https://telegram.me/proxy?"]
PREFIXES += ["https://telegram.dog/socks?", "tg://socks?", "HTTPS://T.ME/SOCKS?"]
ODD_PREFIXES = ["http://t.me/proxy?", "tg://resolve?", "https://t.me/proxy", "tg://proxy?#"]
ODD_PREFIXES += [" \t\x1c\u3000tg://proxy?", "https://t.me/proxy?a=b&"]
ASCII_TEXT = "".join(chr(c) for c in range(32, 127) if chr(c) not in "&#") + "\t\n\x7f"


def rarely(chance: int) -> st.SearchStrategy[bool]:
    """True about once in ``chance`` draws."""
    return st.sampled_from([False] * (chance - 1) + [True])


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual``, and ``odd`` about one time in four."""
    return rarely(4).flatmap(lambda is_odd: odd if is_odd else usual)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_raw_secrets = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16).map(lambda b: b"\xdd" + b),
    st.tuples(st.binary(min_size=16, max_size=16), st.text("abcXZ09.-_\xe9 ", max_size=9)).map(
        lambda t: b"\xee" + t[0] + t[1].encode("latin-1")
    ),
)
_secrets = mostly(
    st.one_of(
        _raw_secrets.map(bytes.hex),
        _raw_secrets.map(b64url),
        _raw_secrets.map(lambda b: base64.urlsafe_b64encode(b).decode()),
        _raw_secrets.map(lambda b: b.hex().upper()),
    ),
    st.one_of(
        st.binary(max_size=20).map(bytes.hex),
        st.binary(max_size=20).map(b64url),
        st.text("0123456789abcdefABCDEF=-_", max_size=40),
    ),
)
_servers = mostly(
    st.sampled_from(["relay.example", "1.2.3.4", "[::1]", "RELAY.Example.", "_a.b", "x.y-z"]),
    st.one_of(
        st.sampled_from(
            [
                "::ffff:1.2.3.4",
                "fe80::1%25eth0",
                "a..b",
                "x-.y",
                "[fe80::1]",
                "1:2:3:4:5:6:7:8",
                "1::2::3",
                "::",
                "::1.2.3.04",
                "1:2:3:4:5:6:7::",
                "[",
                "%E2%84%AA.example",
                "::1%25",
                "1:2:3:4:5:6:1.2.3.4",
                "::1.2.3.4",
                "::256.1.1.1",
                "1:2:3:4:5:6:7:8:9",
                "a" * 64,
            ]
        ),  # fmt: skip
        st.from_regex(r"[a-f0-9.:\[\]%]{1,24}", fullmatch=True),
    ),
)
_ports = mostly(
    st.integers(1, 65535).map(str),
    st.one_of(st.integers(-2, 70000).map(str), st.sampled_from(["0443", "", "443x", "00"])),
)
_kids = mostly(
    st.binary(min_size=8, max_size=8).map(b64url), st.text(B64URL_CHARS, min_size=10, max_size=12)
)
_sigs = mostly(
    st.binary(min_size=64, max_size=64).map(b64url), st.text(B64URL_CHARS, min_size=85, max_size=87)
)
_exps = mostly(
    st.datetimes(datetime(1970, 1, 1), datetime(2200, 1, 1)).map(lambda d: d.strftime("%Y%m%d%H")),
    st.one_of(
        st.from_regex(r"(19[6-9]|20[0-9])[0-9]{7}", fullmatch=True),
        st.sampled_from(["2028022923", "2026022914", "2026123124", "2026113100", "202611300", ""]),
    ),
)
_junk = mostly(
    st.one_of(
        st.text(ASCII_TEXT, max_size=8),
        st.sampled_from(["%zz", "%e2%82", "%C3%A9", "%25", "%0a", "%", "a%2", "%ef%bb%bfx", "a:b"]),
    ),
    st.text(max_size=4),
)
_VALUES = {
    "server": _servers, "port": _ports, "secret": _secrets, "kid": _kids, "sig": _sigs,
    "exp": _exps, "user": _junk, "pass": _junk,
}  # fmt: skip


@st.composite
def link_texts(draw: st.DrawFn) -> str:
    """Link-like text: mostly the right parameters with plausible values, sometimes not."""
    prefix = draw(st.sampled_from(PREFIXES * 3 + ODD_PREFIXES))
    socks = "socks" in prefix.lower()
    names = ["server", "port"] + (["user", "pass"] if socks else ["secret"])
    names += draw(st.sampled_from([["kid", "exp", "sig"]] * 3 + [[], ["kid", "sig"]]))
    if draw(rarely(4)):
        names += draw(st.lists(st.sampled_from(["x", "Server", "SECRET", "", "exp", "user"])))
    items = []
    for name in draw(st.permutations(names)):
        value = draw(_junk if draw(rarely(8)) else _VALUES.get(name.lower(), _junk))
        if draw(rarely(10)):
            value = "".join(f"%{b:02x}" for b in value.encode())
        items.append(name if draw(rarely(40)) else f"{name}={value}")
    return prefix + "&".join(items)


def python_parse(text: str) -> dict[str, Any]:
    try:
        link = signing.parse_link(text)
    except signing.VerificationError as exc:
        return {"error": exc.detail}
    fields = [link.type, link.server, link.port, link.secret, link.kid, link.exp, link.sig]
    return {"link": fields, "tg": link.url("tg")}


def browser_parse(tab: Any, texts: list[str]) -> list[dict[str, Any]]:
    return list(
        tab.evaluate(
            f"""{json.dumps(texts)}.map((text) => {{
                const v = kopirVerifier;
                try {{
                    const l = v.parseLink(text);
                    const fields = [l.type, l.server, l.port, l.secret, l.kid, l.exp, l.sig];
                    return {{link: fields.map((f) => f === undefined ? null : f),
                             tg: v.telegramUrl(l)}};
                }} catch (e) {{
                    if (!(e instanceof v.Malformed)) throw e;
                    return {{error: v.malformedText(e.code, e.arg, 'en')}};
                }}
            }})"""
        )
    )


@settings(SLOW, max_examples=150)
@given(st.lists(st.one_of(link_texts(), st.text(max_size=40)), min_size=1, max_size=25))
def test_the_page_parses_links_exactly_as_signing_link_does(page: Any, texts: list[str]) -> None:
    assert browser_parse(page, texts) == [python_parse(text) for text in texts]


SIG = f"&kid={'A' * 11}&exp=2026010100&sig={'A' * 86}"
HEX16 = "ab" * 16
EDGE_LINKS = [
    RELAY + SIG,  # valid, signed
    "tg://socks?server=h&port=1&user=a%C3%A9&pass=b%20c",  # valid: UTF-8 user
    f"tg://proxy?server=[fe80::1%25eth0]&port=1&secret={HEX16}",  # valid: IPv6 with a scope
    f"tg://proxy?server=::ffff:1.2.3.4&port=1&secret={HEX16}",  # valid: IPv4 tail
    "tg://proxy?server=h&port=1&secret=" + b64url(b"\xdd" + bytes(16)) + "==",  # padded b64url
    f"TG://PROXY?SERVER=H.&Port=65535&secret={HEX16.upper()}",  # upper case everywhere
    "tg://proxy?" + "a" * 2048,
    f"tg://proxy?server=ж&port=1&secret={HEX16}",
    "tg://resolve?domain=x",
    "tg://proxy",
    f"tg://proxy?server=h&port=1&secret={HEX16}#x",
    f"tg://proxy?server&port=1&secret={HEX16}",
    f"tg://proxy?=h&port=1&secret={HEX16}",
    f"tg://proxy?server=a&SERVER=b&port=1&secret={HEX16}",
    f"tg://proxy?server=h&port=1&secret={HEX16}&user=x",
    f"tg://proxy?server=h&port=1&secret={HEX16}&averyveryverylongparametername=1",
    f"tg://proxy?server=%ff&port=1&secret={HEX16}",
    f"tg://proxy?server=%C3%A9&port=1&secret={HEX16}",  # non-ASCII server after decoding
    f"tg://proxy?server=&port=1&secret={HEX16}",
    f"tg://proxy?port=1&secret={HEX16}",
    f"tg://proxy?server=a..b&port=1&secret={HEX16}",
    f"tg://proxy?server=1::2::3&port=1&secret={HEX16}",
    f"tg://proxy?server=::1.2.3.04&port=1&secret={HEX16}",
    f"tg://proxy?server=h&port=0443&secret={HEX16}",
    f"tg://proxy?server=h&port=00&secret={HEX16}",
    f"tg://proxy?server=h&port=0&secret={HEX16}",
    f"tg://proxy?server=h&port=65536&secret={HEX16}",
    f"tg://proxy?server=h&port=123456&secret={HEX16}",
    f"tg://proxy?server=h&port=44x&secret={HEX16}",
    "tg://proxy?server=h&port=1",
    "tg://proxy?server=h&port=1&secret=",
    "tg://proxy?server=h&port=1&secret=abc",  # odd hex: base64url of 2 bytes
    "tg://proxy?server=h&port=1&secret=a",  # one base64 character past a group
    "tg://proxy?server=h&port=1&secret=zz!",
    "tg://proxy?server=h&port=1&secret=" + "ee" + HEX16 + "2f2f",  # ee + domain "//"
    "tg://proxy?server=h&port=1&secret="
    + "ee"
    + HEX16
    + "4558414d504c452e434f4d",  # valid: EXAMPLE.COM
    "tg://proxy?server=h&port=1&secret=" + "dd" + HEX16 + "00",
    "tg://proxy?server=h&port=1&secret==",
    "tg://socks?server=h&port=1&user=a",
    "tg://socks?server=h&port=1&user=a:b&pass=c",
    "tg://socks?server=h&port=1&user=a&pass=b%0a",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid=x&sig=y",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid={'A' * 10}B&exp=2026010100&sig={'A' * 86}",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid={'A' * 11}&exp=2026010100&sig={'A' * 85}B",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid={'A' * 11}&exp=20260101&sig={'A' * 86}",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid={'A' * 11}&exp=2026022900&sig={'A' * 86}",
    f"tg://proxy?server=h&port=1&secret={HEX16}&kid={'A' * 11}&exp=1969123123&sig={'A' * 86}",
]


def test_edge_links_parse_alike_and_reach_every_message(page: Any) -> None:
    expected = [python_parse(text) for text in EDGE_LINKS]
    assert browser_parse(page, EDGE_LINKS) == expected
    reasons = {r["error"] for r in expected if "error" in r}
    templates = page.evaluate("Object.values(kopirVerifier.MALFORMED_CODES)")
    patterns = {t: re.escape(t).replace(re.escape("{0}"), "'.*'") for t in templates}
    unreached = {t for t, p in patterns.items() if not any(re.fullmatch(p, r) for r in reasons)}
    assert unreached == {"link is not signed (no kid, exp and sig)"}  # verify_link's, not parse's
    assert sum("link" in r for r in expected) == 7


CROSS_START = 1704067200  # 2024-01-01, before bob's revocation on 2024-06-01
CROSS_END = 1798761600  # 2027-01-01


def mutate(link: str, how: str, keys: dict[str, SecretKey]) -> str:
    parsed = signing.parse_link(link)
    if how == "server":
        return link.replace("relay.example", "relay.exampla")
    if how == "sig":
        sig = parsed.sig or ""
        return link.replace(sig, sig[:40] + ("B" if sig[40] != "B" else "C") + sig[41:])
    if how == "exp":
        later = signing.format_exp(parsed.expires_at + 3600)
        return link.replace(f"exp={parsed.exp}", f"exp={later}")
    if how == "kid":
        other = keys["alice" if parsed.kid != b64url(keys["alice"].key_id) else "bob"]
        return link.replace(f"kid={parsed.kid}", f"kid={b64url(other.key_id)}")
    if how == "secret-b64":  # the same secret in base64url: still the same signed link
        return link.replace(SECRET, b64url(bytes.fromhex(SECRET)))
    if how == "secret-upper":
        return link.replace(SECRET, SECRET.upper())
    return link


def python_verdict(link: str, root: TrustRoot, now: float) -> str:
    try:
        signing.verify_link(link, root, now)
    except signing.VerificationError as exc:
        return exc.reason
    return "valid"


@SLOW
@given(
    signer=st.sampled_from(["alice", "bob", "carol", "mallory"]),
    expires=st.integers(CROSS_START, CROSS_END),
    now=st.integers(CROSS_START, CROSS_END),
    how=st.sampled_from(["", "server", "sig", "exp", "kid", "secret-b64", "secret-upper"]),
    scheme=st.sampled_from(["tme", "tg"]),
)
def test_the_page_gives_signing_verify_link_verdicts(
    page: Any,
    keys: dict[str, SecretKey],
    root: TrustRoot,
    signer: str,
    expires: int,
    now: int,
    how: str,
    scheme: str,
) -> None:
    link = mutate(signing.sign_link(RELAY, keys[signer], expires).url(scheme), how, keys)
    verdicts = page.evaluate(
        f"""(async () => {{
            const v = kopirVerifier;
            const engines = [await v.chooseEngine(false), await v.chooseEngine(true)];
            const verdict = (engine) => v.verifyLink({json.dumps(link)}, v.trust, {now}, engine);
            return Promise.all(engines.map(async (e) => [e.name, (await verdict(e)).reason]));
        }})()"""
    )
    expected = python_verdict(link, root, now)
    assert verdicts == [["webcrypto", expected], ["js", expected]]


_words = st.sampled_from(
    ["Сәлем", "прокси:", "ссылка", " ", "\\n", ".", ",", "!", ")", "(", "'", '"', "ı", "İ", "ſ",
     "K", "жұмыс", "#", "&", "http://t.me/socks?", "tg://PROXY?", "https://telegram.dog/proxy?"]
)  # fmt: skip


@SLOW
@given(st.lists(st.one_of(_words, link_texts(), st.text(max_size=5)), max_size=12))
def test_the_page_finds_links_in_text_as_kopir_verify_sms_does(page: Any, parts: list[str]) -> None:
    text = "".join(parts)
    found = page.evaluate(f"kopirVerifier.findLinks({json.dumps(text)})")
    assert found == find_links(text)


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
