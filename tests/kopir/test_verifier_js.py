"""The verifier page's JS Ed25519, SHA-512 and link parser, cross-checked against Python."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import signing
from kopir.signcmd import find_links
from signing.minisign import SecretKey
from signing.trust import TrustRoot
from tests.chromium import Browser
from tests.kopir.verifierhelpers import RELAY, SECRET, browser, keys, page_file, root

__all__ = ["browser", "keys", "page_file", "root"]  # the fixtures, used by name

L = 2**252 + 27742317777372353535851937790883648493
SLOW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def page(browser: Browser, page_file: Path) -> Any:
    """A tab with the verifier loaded offline, for calling its functions directly."""
    tab = browser.new_page()
    tab.goto(page_file.as_uri(), offline=True)
    return tab


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
