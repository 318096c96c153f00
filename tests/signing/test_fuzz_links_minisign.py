"""Fuzz tests for the link and minisign key and signature parsers (STYLE.md §9)."""

from __future__ import annotations

import base64
import binascii
import functools
import string
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.errors import FormatError, KeyFileError, VerificationError
from signing.link import Link, parse_link, sign_link, verify_link
from signing.minisign import parse_secret_key, parse_signature, scrypt_params, sign, verify
from tests.signing.fuzzhelpers import (
    ANY_CHAR,
    DAYS,
    FUZZ,
    HOURS,
    KEY,
    LEGACY_SIGNATURE,
    MONTHS,
    NOW,
    SIGNATURE,
    TRUST,
    YEARS,
    check_public_key,
    check_signature,
    refused,
)

# --- characters and text ------------------------------------------------------------------

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


# --- regressions: minimal inputs the fuzzers found --------------------------------------
# Each pins a library bug that was open when this file was written (see the fuzz report).

SIGNED_SOCKS = sign_link("tg://socks?server=relay.example&port=1080&user=u&pass=p", KEY, NOW + 3600)
SIGNED_PROXY = sign_link(
    f"tg://proxy?server=relay.example&port=443&secret={'00' * 16}", KEY, NOW + 3600
)


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
