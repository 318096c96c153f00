"""Fuzz tests for the signing parsers: never crash, never accept garbage (STYLE.md §9).

Every parser gets arbitrary input and mutations of valid input. It may refuse only with our
own error types (``SigningError`` and its subclasses), and whatever it accepts must be
structurally valid: it re-serialises to the same or an equivalent form (DESIGN.md §5).

The key, the clock and hypothesis itself are fixed, so a failure reproduces exactly.
The regression tests at the end pin the inputs the fuzzers found.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import string
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing.canonical import canonical_json, parse_canonical
from signing.errors import FormatError, KeyFileError, SigningError, VerificationError
from signing.link import Link, parse_link, sign_link, verify_link
from signing.listdoc import ListDocument, parse_list
from signing.minisign import (
    PublicKey,
    SecretKey,
    Signature,
    parse_secret_key,
    parse_signature,
    scrypt_params,
    sign,
    verify,
)
from signing.trust import TrustKey, TrustRoot, parse_trust_root

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = 1_800_000_000.0  # 2027-01-15, fixed so nothing depends on the clock
# A fixed key whose link kid ("-_---_--AQI") uses both base64url-only characters.
KEY = SecretKey(bytes.fromhex("fbffbefbffbe0102"), bytes(range(32)))
OTHER = SecretKey(bytes.fromhex("0102030405060708"), bytes(range(32, 64)))
THRESHOLD = {"root": 1, "lists": 1, "links": 1, "log": 1}
TRUST = TrustRoot(
    1,
    "2099-01-01T00:00:00Z",
    (TrustKey("k", KEY.public_key, frozenset({"root", "lists", "links"})),),
    THRESHOLD,
)


T = TypeVar("T")


def refused(errors: type[SigningError], fn: Callable[[], T]) -> T | None:
    """Call ``fn``; return None when it refuses with ``errors``, let anything else through."""
    try:
        return fn()
    except errors:
        return None


# --- characters and text ------------------------------------------------------------------

# Characters that matter to the parsers, plus a few whose lower-case form is ASCII (K, the
# Kelvin sign) or two characters long (İ), and lone surrogates, which a str can hold (from
# os.fsdecode or sys.argv) but UTF-8 cannot encode.
SPECIAL = "?&=#%:[]./-_+ \t\r\n\x00\x7f\u212a\u0130\u2028\ufeff\uff12\u0662"
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
ANY_CHAR = st.one_of(st.characters(), st.sampled_from(SPECIAL), SURROGATES)
ASCII_CHAR = st.characters(max_codepoint=127)


def _insert(draw: st.DrawFn, text: str) -> str:
    pos = draw(st.integers(0, len(text)))
    return text[:pos] + draw(st.text(ANY_CHAR, min_size=1, max_size=4)) + text[pos:]


def _delete(draw: st.DrawFn, text: str) -> str:
    if not text:
        return text
    pos = draw(st.integers(0, len(text) - 1))
    return text[:pos] + text[pos + draw(st.integers(1, 4)) :]


def _replace(draw: st.DrawFn, text: str) -> str:
    return _insert(draw, _delete(draw, text))


def _truncate(draw: st.DrawFn, text: str) -> str:
    return text[: draw(st.integers(0, len(text)))]


CHAR_OPS = (_insert, _delete, _replace, _truncate)


# --- links --------------------------------------------------------------------------------

HOSTS = ["relay.example", "Relay.Example.", "1.2.3.4", "[2001:db8::1]", "::1", "a-b_c.d", "xn--e1a"]
DOMAIN_CHARS = string.ascii_lowercase + string.digits + ".-"


def _secret_bytes() -> st.SearchStrategy[bytes]:
    body = st.binary(min_size=16, max_size=16)
    domain = st.text(DOMAIN_CHARS, min_size=1, max_size=30).map(str.encode)
    return st.one_of(
        body,
        body.map(lambda b: b"\xdd" + b),
        st.tuples(body, domain).map(lambda t: b"\xee" + t[0] + t[1]),
    )


def _secret_text(draw: st.DrawFn, raw: bytes) -> str:
    form = draw(st.sampled_from(["hex", "HEX", "b64", "b64pad"]))
    if form in ("hex", "HEX"):
        return raw.hex() if form == "hex" else raw.hex().upper()
    text = base64.urlsafe_b64encode(raw).decode()
    text = text if form == "b64pad" else text.rstrip("=")
    # Base64 that happens to look like hex (16 zero bytes: 22 'A's) is read as hex.
    return raw.hex() if len(text) % 2 == 0 and set(text) <= set(string.hexdigits) else text


@st.composite
def signed_links(draw: st.DrawFn) -> Link:
    """A valid link, signed by KEY, built from a non-canonical but acceptable URL."""
    server, port = draw(st.sampled_from(HOSTS)), draw(st.integers(1, 65535))
    if draw(st.booleans()):
        secret = _secret_text(draw, draw(_secret_bytes()))
        url = f"tg://proxy?server={server}&port={port}&secret={secret}"
    else:
        url = f"https://t.me/socks?server={server}&port={port}"
        if draw(st.booleans()):
            user = draw(st.text(st.characters(exclude_characters=":\n"), max_size=12))
            password = draw(st.text(st.characters(exclude_characters="\n"), max_size=12))
            url += f"&user={quote(user, safe='')}&pass={quote(password, safe='')}"
    return sign_link(url, KEY, NOW + draw(st.integers(1, 10**8)))


def _split(url: str) -> tuple[str, list[list[str]]]:
    head, _, query = url.partition("?")
    return head, [item.split("=", 1) + [""] * ("=" not in item) for item in query.split("&")]


def _join(head: str, params: list[list[str]]) -> str:
    return head + "?" + "&".join("=".join(p) for p in params)


YEARS = st.integers(0, 9999) | st.sampled_from([0, 1, 1969, 1970, 2038, 9999])
MONTHS = st.integers(1, 12) | st.integers(0, 13)
DAYS = st.integers(1, 28) | st.integers(0, 32)
HOURS = st.integers(0, 23) | st.integers(24, 25)
EXP_VALUES = st.tuples(YEARS, MONTHS, DAYS, HOURS).map(
    lambda t: "{:04d}{:02d}{:02d}{:02d}".format(*t)
)
PARAM_VALUES = st.one_of(
    st.text(ANY_CHAR, max_size=30),
    st.text(ASCII_CHAR, max_size=90),
    st.text(string.ascii_letters + string.digits + "-_=", max_size=90),
    EXP_VALUES,
    st.sampled_from(["0", "00443", "65536", "443", "1e3", "٤٤٣", "", "AAAAAAAAAAA", "A" * 86]),
)
B64URL = string.ascii_letters + string.digits + "-_"
TRICKY_PARAMS = {
    "server": st.sampled_from(["[::1", "::1]", "[::1]", ".", "-", "_", "a..b", "\u212a.example"])
    | st.text(string.ascii_letters + string.digits + ".-:[]_%", max_size=20),
    "port": st.sampled_from(["0", "1", "65535", "65536", "0443", "+443", " 443", "4_43", "١"]),
    "secret": _secret_bytes().map(lambda b: base64.urlsafe_b64encode(b).decode())
    | st.binary(max_size=40).map(bytes.hex)
    | st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    "user": st.text(ANY_CHAR, max_size=8),
    "pass": st.text(ANY_CHAR, max_size=8),
    "kid": st.text(B64URL, min_size=10, max_size=12),
    "exp": EXP_VALUES,
    "sig": st.text(B64URL, min_size=85, max_size=87),
}
PARAM_NAMES = ["server", "port", "secret", "user", "pass", "kid", "exp", "sig"]
PREFIXES = [
    "tg://proxy",
    "TG://Proxy",
    "tg://socks",
    "https://t.me/proxy",
    "https://telegram.me/proxy",
    "https://telegram.dog/socks",
    "http://t.me/proxy",
    "https://t.me/proxy/",
    "tg:proxy",
    "",
]


def _link_op(draw: st.DrawFn, url: str) -> str:
    """One mutation of a link, at the character or at the parameter level."""
    head, params = _split(url)
    i = draw(st.integers(0, len(params) - 1))
    op = min(draw(st.integers(0, 26)), 18)  # a third are tricky values
    if op < 4:
        return CHAR_OPS[op](draw, url)
    if op == 4:  # duplicate a parameter, with the same or another value
        dup = [params[i][0], draw(st.sampled_from([params[i][1], "", "x", "443"]))]
        params.insert(draw(st.integers(0, len(params))), dup)
    elif op == 5:
        params = list(draw(st.permutations(params)))
    elif op == 6:
        params[i][0] = draw(st.sampled_from([str.upper, str.title, str.swapcase]))(params[i][0])
    elif op == 7:
        params[i][1] = draw(st.sampled_from([str.upper, str.lower, str.swapcase]))(params[i][1])
    elif op == 8:
        name = draw(st.sampled_from(["foo", "utm_source", "Server2", "", "\u212aid"]))
        params.insert(draw(st.integers(0, len(params))), [name, draw(PARAM_VALUES)])
    elif op == 9:  # percent-encode some or all of a value (or a name)
        part = draw(st.integers(0, 1))
        text = params[i][part]
        lo = draw(st.integers(0, len(text)))
        hi = draw(st.integers(lo, len(text)))
        enc = "".join(
            f"%{b:02x}" if draw(st.booleans()) else f"%{b:02X}" for b in text[lo:hi].encode()
        )
        params[i][part] = text[:lo] + enc + text[hi:]
    elif op == 10:
        return url + "#" + draw(st.text(ANY_CHAR, max_size=10))
    elif op == 11:
        for p in params:
            if p[0].lower() == "port":
                p[1] = "0" * draw(st.integers(1, 3)) + p[1]
    elif op == 12:  # huge: pad one value so the link is up to ~3000 characters
        params[i][1] += draw(st.sampled_from("a0%=&")) * draw(st.integers(0, 3000))
    elif op == 13:
        params[i][1] = draw(PARAM_VALUES)
    elif op == 14:
        params[i][0] = draw(st.sampled_from(PARAM_NAMES))
    elif op == 15:
        head = draw(st.sampled_from(PREFIXES))
    elif op == 16:
        del params[i]
    elif op == 17:
        pad = st.text(st.sampled_from(" \t\n\r\x0b\u3000"), max_size=3)
        return draw(pad) + url + draw(pad)
    else:  # a tricky value for a named parameter, replacing it or added
        name = draw(st.sampled_from(sorted(TRICKY_PARAMS)))
        params = [p for p in params if p[0] != name] + [[name, draw(TRICKY_PARAMS[name])]]
    return _join(head, params)


@st.composite
def mutated_links(draw: st.DrawFn) -> tuple[Link, str]:
    link = draw(signed_links())
    url = link.url(draw(st.sampled_from(["tme", "tg"])))
    for _ in range(draw(st.integers(1, 3))):
        url = _link_op(draw, url)
    return link, url


@st.composite
def link_shaped(draw: st.DrawFn) -> str:
    """A known prefix and random parameters, to get past the first checks more often."""
    names = st.sampled_from(PARAM_NAMES) | st.text(ASCII_CHAR, max_size=6)
    params = draw(st.lists(st.tuples(names, PARAM_VALUES), max_size=9))
    return draw(st.sampled_from(PREFIXES)) + "?" + "&".join(f"{n}={v}" for n, v in params)


def check_parse_link(url: str) -> Link | None:
    """parse_link refuses with ``malformed`` or returns a link that survives a round trip."""
    try:
        link = parse_link(url)
    except VerificationError as exc:
        assert exc.reason == "malformed", exc
        return None
    assert link.type in ("proxy", "socks")
    assert 1 <= link.port <= 65535
    if link.type == "proxy":
        raw = bytes.fromhex(link.secret)
        assert link.secret == raw.hex()
        assert (
            len(raw) == 16
            or (len(raw) == 17 and raw[0] == 0xDD)
            or (len(raw) > 17 and raw[0] == 0xEE)
        ), link.secret
    names = [item.partition("=")[0].lower() for item in url.strip().partition("?")[2].split("&")]
    assert len(names) == len(set(names)), f"duplicate parameter accepted in {url!r}"
    assert parse_link(link.url("tme")) == link
    assert parse_link(link.url("tg")) == link
    if link.sig is not None:
        assert link.expires_at > -1e12
    return link


@FUZZ
@given(st.text(ANY_CHAR, max_size=300))
def test_parse_link_random_text(url: str) -> None:
    check_parse_link(url)


@FUZZ
@given(st.text(ASCII_CHAR, max_size=300))
def test_parse_link_random_ascii(url: str) -> None:
    check_parse_link(url)


@FUZZ
@given(link_shaped())
def test_parse_link_random_parameters(url: str) -> None:
    check_parse_link(url)


@FUZZ
@given(signed_links(), st.sampled_from(["tme", "tg"]))
def test_valid_links_round_trip_and_verify(link: Link, scheme: str) -> None:
    assert check_parse_link(link.url(scheme)) == link
    assert verify_link(link.url(scheme), TRUST, NOW) == link


def check_verify_link(original: Link, url: str) -> None:
    """A changed link either fails to verify or still carries exactly the signed fields."""
    got = refused(VerificationError, lambda: verify_link(url, TRUST, NOW))
    if got is not None:
        assert got.message() == original.message(), f"{url!r} verified with other fields"
        assert got == original


@settings(FUZZ, max_examples=600)
@given(mutated_links())
def test_mutated_links_parse_strictly_and_never_change_signed_fields(
    case: tuple[Link, str],
) -> None:
    original, url = case
    check_parse_link(url)
    check_verify_link(original, url)


@settings(FUZZ, max_examples=400)
@given(signed_links(), st.sampled_from(sorted(TRICKY_PARAMS)), st.data())
def test_links_with_one_tricky_parameter(link: Link, name: str, data: st.DataObject) -> None:
    head, params = _split(link.url("tg"))
    value = data.draw(TRICKY_PARAMS[name], label=name)
    url = _join(head, [p for p in params if p[0] != name] + [[name, value]])
    check_parse_link(url)
    check_verify_link(link, url)


# --- minisign files -----------------------------------------------------------------------


@functools.cache
def encrypted_key_text() -> str:
    """Made once, with small scrypt limits; parsing never runs scrypt."""
    return KEY.text(b"pw", opslimit=32768, memlimit=16777216)


SIGNATURE = sign(KEY, b"msg", "comment")
LEGACY_SIGNATURE = sign(KEY, b"msg", "timestamp:1 file:msg", prehash=False)


def _b64_op(draw: st.DrawFn, line: str) -> str:
    """Decode a base64 line, change its bytes, and encode it again (canonically)."""
    raw = bytearray(base64.b64decode(line))
    pos = draw(st.integers(0, len(raw)))
    op = draw(st.integers(0, 3))
    if op == 0:
        raw[pos : pos + 1] = draw(st.binary(min_size=1, max_size=1))
    elif op == 1:
        new = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"Ed", b"ED", b"Sc"]))
        raw[pos : pos + len(new)] = new
    elif op == 2:
        del raw[pos : pos + draw(st.integers(1, 3))]
    else:
        raw[pos:pos] = draw(st.binary(min_size=1, max_size=3))
    return base64.b64encode(bytes(raw)).decode()


def _text_op(draw: st.DrawFn, text: str) -> str:
    """One mutation of a line-based file: characters, lines, line ends or decoded bytes."""
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(st.integers(0, 9))
    if op < 4:
        return CHAR_OPS[op](draw, text)
    if op == 4:
        del lines[i]
    elif op == 5:
        lines.insert(i, lines[i])
    elif op == 6:
        lines = list(draw(st.permutations(lines)))
    elif op == 7:
        return draw(st.sampled_from(["\r\n", "\n\n", "\r", " \n"])).join(lines)
    elif op == 8:
        try:
            base64.b64decode(lines[i], validate=True)
            lines[i] = _b64_op(draw, lines[i])
        except (binascii.Error, ValueError):
            lines[i] += draw(st.text(ANY_CHAR, max_size=5))
    else:
        lines[i] = draw(st.text(ANY_CHAR, max_size=40))
    return "\n".join(lines)


def mutations_of(*texts: str) -> st.SearchStrategy[str]:
    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(texts))
        for _ in range(draw(st.integers(1, 3))):
            text = _text_op(draw, text)
        return text

    return mutated()


def check_public_key(text: str) -> PublicKey | None:
    pk = refused(FormatError, lambda: PublicKey.parse(text))
    if pk is None:
        return None
    assert len(pk.key_id) == 8 and len(pk.key) == 32
    assert pk.line in text.split("\n"), "the base64 line must be canonical"
    assert PublicKey.parse(pk.text()) == pk
    assert PublicKey.parse(pk.line) == pk
    if text.startswith(pk.text().partition("\n")[0] + "\n"):
        assert pk.text() in (text, text + "\n")
    junk = Signature(b"ED", pk.key_id, bytes(64), "c", bytes(64))
    with pytest.raises(VerificationError):
        verify(pk, junk, message=b"msg")
    return pk


def check_secret_key(text: str) -> None:
    esk = refused(FormatError, lambda: parse_secret_key(text))
    if esk is None:
        return
    assert len(esk.salt) == 32 and len(esk.keynum_sk) == 104
    if esk.encrypted:
        scrypt_params(esk.opslimit, esk.memlimit)  # parsing vetted them already
        with pytest.raises(KeyFileError):
            esk.decrypt(None)  # fails before any scrypt work
        return
    key = refused(KeyFileError, lambda: esk.decrypt(None))
    if key is None:
        return
    assert (key.key_id, key.seed) == (esk.keynum_sk[:8], esk.keynum_sk[8:40])
    assert key.public_key.key == esk.keynum_sk[40:72], "public half inconsistent"
    assert parse_secret_key(key.text(None)).decrypt(None) == key
    verify(key.public_key, sign(key, b"m", "c"), message=b"m")


def check_signature(text: str) -> Signature | None:
    """Parses exactly, and verifies only if nothing signed changed."""
    sig = refused(FormatError, lambda: parse_signature(text))
    if sig is None:
        return None
    # A missing final newline is tolerated (as minisign does); everything else is kept.
    assert sig.text() == (text if text.endswith("\n") else text + "\n")
    assert parse_signature(sig.text()) == sig
    try:
        verify(KEY.public_key, sig, message=b"msg")
    except VerificationError:
        return sig
    original = SIGNATURE if sig.prehashed else LEGACY_SIGNATURE
    signed = (sig.algorithm, sig.key_id, sig.signature, sig.trusted_comment, sig.global_signature)
    assert signed == (
        original.algorithm,
        original.key_id,
        original.signature,
        original.trusted_comment,
        original.global_signature,
    ), f"{text!r} verified with other signed fields"
    return sig


@FUZZ
@given(st.text(ANY_CHAR, max_size=200))
def test_minisign_parsers_random_text(text: str) -> None:
    check_public_key(text)
    check_secret_key(text)
    check_signature(text)


@FUZZ
@given(mutations_of(KEY.public_key.text(), KEY.public_key.line, KEY.public_key.line + "\n"))
def test_public_key_mutations(text: str) -> None:
    check_public_key(text)


@FUZZ
@given(mutations_of(KEY.text(None)))
def test_unencrypted_secret_key_mutations(text: str) -> None:
    check_secret_key(text)


@FUZZ
@given(st.data())
def test_encrypted_secret_key_mutations(data: st.DataObject) -> None:
    check_secret_key(data.draw(mutations_of(encrypted_key_text())))


@FUZZ
@given(
    st.sampled_from([b"Sc", b"\x00\x00", b"Xx"]),
    st.integers(0, 2**64 - 1) | st.sampled_from([0, 32768, 2**25, 2**30, 2**31, 2**63]),
    st.integers(0, 2**64 - 1) | st.sampled_from([0, 2**24, 2**30, 2**31, 2**40, 2**63]),
)
def test_secret_key_scrypt_limits(kdf: bytes, opslimit: int, memlimit: int) -> None:
    raw = bytearray(base64.b64decode(encrypted_key_text().split("\n")[1]))
    raw[2:4] = kdf
    raw[38:46] = opslimit.to_bytes(8, "little")
    raw[46:54] = memlimit.to_bytes(8, "little")
    check_secret_key(f"untrusted comment: x\n{base64.b64encode(bytes(raw)).decode()}\n")


@settings(FUZZ, max_examples=400)
@given(mutations_of(SIGNATURE.text(), LEGACY_SIGNATURE.text()))
def test_signature_mutations(text: str) -> None:
    check_signature(text)


# --- canonical JSON documents -------------------------------------------------------------


class Raw(str):
    """A JSON token written verbatim, for numbers Python cannot hold (1e400) and the like."""


RAW_TOKENS = st.sampled_from(
    ["1e400", "-1e400", "1E999", "1e-400", "-0", "-0.0", "1.0", "1e5", "01", "1.", ".5"]
    + ["NaN", "Infinity", "-Infinity", "1" * 4400, "true ", "nul", '"\\ud800"', '"\\udc00x"']
).map(Raw)
INTERESTING_STRINGS = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "２０２６-01-01T00:00:00Z",
        "2026-01-01T00:00:00+00:00",
        "kopir-list/1",
        "kopir-trust/1",
        "0" * 64,
        "g" * 64,
        "00" * 16,
        "00 11",
        KEY.public_key.line,
        KEY.public_key.line + "\n",
        KEY.public_key.text(),
        OTHER.public_key.line,
        "root",
        "lists",
        "links",
        "log",
        "",
    ]
)
UNICODE_DIGITS = st.characters(categories=["Nd"])
TIMES = st.one_of(
    INTERESTING_STRINGS,
    st.tuples(YEARS, MONTHS, DAYS, HOURS).map(
        lambda t: "{:04d}-{:02d}-{:02d}T{:02d}:00:00Z".format(*t)
    ),
    st.from_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", fullmatch=True),
    st.text(UNICODE_DIGITS, min_size=4, max_size=4).map(lambda y: y + "-01-01T00:00:00Z"),
)
TRICKY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "key": st.sampled_from(
        [
            KEY.public_key.line + "\n",
            KEY.public_key.text(),
            KEY.public_key.text().rstrip("\n"),
            " " + KEY.public_key.line,
            OTHER.public_key.line,
            KEY.public_key.line.rstrip("="),
        ]
    ),
    "previous": st.sampled_from(["g" * 64, "AB" * 32, "0" * 63, " " * 64, "٠" * 64])
    | st.text(string.hexdigits + "xg", min_size=64, max_size=64),
    "secret": st.sampled_from(["", "00 11", "ABCD", "0" * 33, "0x00", "\u0660\u0660"]),
    "port": st.sampled_from([0, 65536, -1, 1.0, True, "443"]),
    "ports_tried": st.lists(st.sampled_from([0, -1, 65536, 10**20, True, 443]), max_size=3),
    "version": st.sampled_from([0, -1, 1.0, True, 2**63, 10**30, "1"]),
    "roles": st.lists(st.sampled_from(["root", "lists", "links", "log", "x"]), max_size=5),
    "threshold": st.dictionaries(
        st.sampled_from(["root", "lists", "links", "log", "x"]),
        st.sampled_from([0, 1, 2, 3, True, 1.0, None]),
    ),
    "rtt_ms": st.sampled_from([-1, 0, 1e308, -0.0, True, Raw("1e400"), Raw("-1e999")]),
    "name": st.sampled_from(["", "k", "old", " ", "\u212a"]),
}
for _time_field in ("expires", "issued", "last_ok", "revoked"):
    TRICKY_FIELDS[_time_field] = TIMES
FIELD_NAMES = st.sampled_from(
    ["format", "version", "expires", "issued", "previous", "proxies", "publisher", "keys"]
    + ["threshold", "key", "name", "roles", "revoked", "port", "secret", "tags", "type"]
    + ["root", "lists", "links", "log", "domain", "last_ok", "ports_tried", "rtt_ms", "server"]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-2, 70000),
    st.floats(),
    st.text(ANY_CHAR, max_size=12),
    INTERESTING_STRINGS,
    RAW_TOKENS,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(FIELD_NAMES | st.text(ANY_CHAR, max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)


def render(value: Any, ascii_only: bool = False, sort: bool = True) -> str:
    """JSON text in canonical layout, where ``Raw`` tokens go in verbatim."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = sorted(value.items()) if sort else list(value.items())
        body = ",".join(f"{render(k, ascii_only)}:{render(v, ascii_only, sort)}" for k, v in items)
        return "{" + body + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, ascii_only, sort) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


@st.composite
def rendered(draw: st.DrawFn, value: Any) -> bytes:
    text = render(value, ascii_only=draw(st.booleans()), sort=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


ENTRY = {
    "domain": "example.com",
    "last_ok": None,
    "port": 443,
    "ports_tried": [443],
    "rtt_ms": 12.5,
    "secret": "00" * 16,
    "server": "relay.example",
    "tags": ["a"],
    "type": "ee",
}
LIST_DATA = ListDocument(
    "pub", 1, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", (ENTRY,), None
).encode()
LIST_DATA_2 = ListDocument(
    "pub", 7, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", (ENTRY, ENTRY), "ab" * 32
).encode()
TRUST_DATA = TRUST.encode()
TRUST_DATA_2 = TrustRoot(
    3,
    "2099-01-01T00:00:00Z",
    (
        TrustKey("k", KEY.public_key, frozenset({"root", "lists", "links", "log"})),
        TrustKey("old", OTHER.public_key, frozenset({"lists"}), "2026-06-01T00:00:00Z"),
    ),
    {"root": 1, "lists": 2, "links": 1, "log": 1},
).encode()
DOCUMENTS = [LIST_DATA, LIST_DATA_2, TRUST_DATA, TRUST_DATA_2]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*path, i))
    return found


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _tricky_paths(obj: Any) -> list[tuple[Any, ...]]:
    return [p for p in _paths(obj) if p and p[-1] in TRICKY_FIELDS]


def _json_op(draw: st.DrawFn, obj: Any) -> Any:
    """Replace, delete or add one value somewhere in a decoded document."""
    tricky = _tricky_paths(obj)
    use_tricky = draw(st.booleans())
    if tricky and use_tricky:
        path = draw(st.sampled_from(tricky))
        _set(obj, path, draw(TRICKY_FIELDS[path[-1]]))
        return obj
    path = draw(st.sampled_from(_paths(obj)))
    if not path:
        return draw(JSON_VALUES) if draw(st.integers(0, 9)) == 0 else obj
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    op = draw(st.integers(0, 2))
    if op == 0:
        del parent[path[-1]]
    elif op == 1 and isinstance(parent, dict):
        parent[draw(FIELD_NAMES | st.text(ANY_CHAR, max_size=6))] = draw(JSON_VALUES)
    elif op == 1:
        parent.insert(path[-1], parent[path[-1]])
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return obj


def _canonical_bytes(obj: Any) -> bytes:
    """Canonical layout of an object that may hold raw tokens or lone surrogates."""
    return render(obj).encode("utf-8", "surrogatepass")


def _bytes_op(draw: st.DrawFn, data: bytes) -> bytes:
    pos = draw(st.integers(0, len(data)))
    op = draw(st.integers(0, 4))
    if op == 0:
        return data[:pos] + draw(st.binary(min_size=1, max_size=3)) + data[pos:]
    if op == 1:
        return data[:pos] + data[pos + draw(st.integers(1, 4)) :]
    if op == 2:
        return (
            data[:pos]
            + bytes([draw(st.sampled_from(b' \n"\\{}[],:0123456789e.-'))])
            + data[pos + 1 :]
        )
    if op == 3:  # splice in a copy of another part (duplicate keys, entries...)
        lo = draw(st.integers(0, len(data)))
        hi = draw(st.integers(lo, min(len(data), lo + 80)))
        return data[:pos] + data[lo:hi] + data[pos:]
    return data[:pos]


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(DOCUMENTS))
    if draw(st.booleans()):
        obj = json.loads(data)
        for _ in range(draw(st.integers(1, 3))):
            obj = _json_op(draw, obj)
        return _canonical_bytes(obj) if draw(st.integers(0, 3)) else draw(rendered(obj))
    for _ in range(draw(st.integers(1, 3))):
        data = _bytes_op(draw, data)
    return data


def check_canonical(data: bytes) -> None:
    obj = refused(FormatError, lambda: parse_canonical(data, "x"))
    if obj is None:
        return
    assert isinstance(obj, dict)
    assert canonical_json(obj) == data
    assert json.loads(data) == obj


def _ascii_times(*times: str | None) -> None:
    for t in times:
        assert t is None or t.isascii(), f"non-ASCII time {t!r} accepted"


def check_list(data: bytes) -> None:
    doc = refused(FormatError, lambda: parse_list(data))
    if doc is None:
        return
    assert doc.encode() == data
    assert doc.version >= 1
    _ascii_times(doc.issued, doc.expires, *(p["last_ok"] for p in doc.proxies))
    if doc.previous is not None:
        assert len(doc.previous) == 64 and set(doc.previous) <= set("0123456789abcdef")


def check_trust(data: bytes) -> None:
    root = refused(FormatError, lambda: parse_trust_root(data))
    if root is None:
        return
    assert root.encode() == data
    assert root.version >= 1 and root.keys
    _ascii_times(root.expires, *(k.revoked for k in root.keys))


DOC_CHECKS = pytest.mark.parametrize(
    "check", [check_canonical, check_list, check_trust], ids=["canonical", "list", "trust"]
)


@DOC_CHECKS
@FUZZ
@given(data=st.binary(max_size=300))
def test_documents_random_bytes(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@FUZZ
@given(data=JSON_VALUES.flatmap(rendered))
def test_documents_random_json(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@settings(FUZZ, max_examples=400)
@given(data=mutated_documents())
def test_documents_mutations(check: Callable[[bytes], None], data: bytes) -> None:
    check(data)


@DOC_CHECKS
@FUZZ
@given(data=st.data())
def test_documents_with_one_tricky_field(
    check: Callable[[bytes], None], data: st.DataObject
) -> None:
    obj = json.loads(data.draw(st.sampled_from(DOCUMENTS), label="document"))
    path = data.draw(st.sampled_from(_tricky_paths(obj)), label="path")
    _set(obj, path, data.draw(TRICKY_FIELDS[path[-1]], label="value"))
    check(_canonical_bytes(obj))


def test_valid_documents_are_accepted() -> None:
    assert parse_list(LIST_DATA).encode() == LIST_DATA
    assert parse_list(LIST_DATA_2).encode() == LIST_DATA_2
    assert parse_trust_root(TRUST_DATA).encode() == TRUST_DATA
    assert parse_trust_root(TRUST_DATA_2).encode() == TRUST_DATA_2
    assert check_public_key(KEY.public_key.text()) == KEY.public_key
    assert check_signature(SIGNATURE.text()) == SIGNATURE


# --- regressions: minimal inputs the fuzzers found --------------------------------------
# Each pins a library bug that was open when this file was written (see the fuzz report).

SIGNED_SOCKS = sign_link("tg://socks?server=relay.example&port=1080&user=u&pass=p", KEY, NOW + 3600)
SIGNED_PROXY = sign_link(
    f"tg://proxy?server=relay.example&port=443&secret={'00' * 16}", KEY, NOW + 3600
)


@pytest.mark.parametrize(
    "data", [b'{"a":1e400}', b'{"a":-1e400}', b'{"a":"\\ud800"}', b'{"\\udc00":1}']
)
def test_canonical_refuses_values_it_cannot_re_encode(data: bytes) -> None:
    # json.loads gives inf or a lone surrogate; canonical_json then raises ValueError or
    # UnicodeEncodeError outside parse_canonical's try block.
    with pytest.raises(FormatError):
        parse_canonical(data, "x")


def test_list_with_out_of_range_number_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        parse_list(LIST_DATA.replace(b'"rtt_ms":12.5', b'"rtt_ms":1e400'))


def test_link_expiring_in_year_zero_is_malformed() -> None:
    # calendar.monthrange accepts year 0 but calendar.timegm raises ValueError.
    url = SIGNED_PROXY.url().replace(f"exp={SIGNED_PROXY.exp}", "exp=0000010100")
    with pytest.raises(VerificationError) as info:
        parse_link(url)
    assert info.value.reason == "malformed"
    with pytest.raises(VerificationError) as info:
        verify_link(url, TRUST, NOW)
    assert info.value.reason == "malformed"


def test_socks_link_with_lone_surrogate_is_refused() -> None:
    # sys.argv holds "\udcff" for a 0xff byte: `kopir verify link` can get this string.
    url = SIGNED_SOCKS.url("tg").replace("user=u", "user=\udcff")
    with pytest.raises(VerificationError):
        verify_link(url, TRUST, NOW)  # raises UnicodeEncodeError in Link.message()
    check_parse_link(url)  # parse_link accepts it, then Link.url() raises UnicodeEncodeError


def test_signature_with_lone_surrogate_in_trusted_comment() -> None:
    text = SIGNATURE.text().replace("trusted comment: comment", "trusted comment: comment\udcff")
    sig = refused(FormatError, lambda: parse_signature(text))
    if sig is not None:
        with pytest.raises(VerificationError):
            verify(KEY.public_key, sig, message=b"msg")  # UnicodeEncodeError today


@pytest.mark.parametrize("key", [KEY.public_key.line + "\n", KEY.public_key.text()])
def test_trust_root_key_must_be_the_bare_base64_line(key: str) -> None:
    # PublicKey.parse also reads whole key files, so the root parses but does not re-encode.
    data = TRUST_DATA.replace(json.dumps(KEY.public_key.line).encode(), json.dumps(key).encode())
    root = refused(FormatError, lambda: parse_trust_root(data))
    assert root is None or root.encode() == data


@pytest.mark.parametrize("when", ["２０９９-01-01T00:00:00Z", "٢٠٩٩-01-01T00:00:00Z"])
def test_document_times_must_be_ascii(when: str) -> None:
    # The RFC 3339 pattern uses \d, which matches any Unicode decimal digit.
    for parse, data in ((parse_list, LIST_DATA), (parse_trust_root, TRUST_DATA)):
        with pytest.raises(FormatError):
            parse(data.replace(b"2099-01-01T00:00:00Z", when.encode()))


def test_list_previous_must_be_a_hex_digest() -> None:
    data = LIST_DATA.replace(b'"previous":null', b'"previous":"' + b"g" * 64 + b'"')
    with pytest.raises(FormatError):
        parse_list(data)
