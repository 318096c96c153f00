"""Signed proxy links, version 1 (DESIGN.md §5.2).

Theory of operation
-------------------
A signed link is an ordinary Telegram proxy link with three more query parameters, which
Telegram clients ignore: ``kid`` (base64url of the 8-byte minisign key id), ``exp``
(``YYYYMMDDHH`` UTC) and ``sig`` (base64url Ed25519 signature). The signature covers::

    kopir-link-v1\\n<type>\\n<server>\\n<port>\\n<secret-hex or user:pass>\\n<exp>\\n<kid>\\n

Parsing is strict because a lenient parser is how a look-alike gets in: parameter names are
compared lower-cased (as tdesktop does), duplicates and unknown parameters are rejected, the
port is canonical decimal, and the secret must be one of the three kinds Telegram knows
(16 bytes, ``dd`` + 16, ``ee`` + 16 + domain), given in hex or base64url.

Verification checks, in order: well-formed, key listed for ``links`` and not revoked, a valid
signature, then the expiry, so a tampered link always reports ``bad-signature``.

This is a hot path (every SMS of a campaign is a signed link), so it avoids ``urllib.parse``
and other general machinery; ``bench/sign_bench.py`` measures it against raw Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import ipaddress
import re
import time
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature

from signing.errors import VerificationError
from signing.minisign import SecretKey
from signing.trust import TrustRoot, link_kid

MAGIC = "kopir-link-v1"
_PREFIXES = {
    "https://t.me/proxy?": "proxy",
    "https://telegram.me/proxy?": "proxy",
    "https://telegram.dog/proxy?": "proxy",
    "tg://proxy?": "proxy",
    "https://t.me/socks?": "socks",
    "https://telegram.me/socks?": "socks",
    "https://telegram.dog/socks?": "socks",
    "tg://socks?": "socks",
}
_SCHEMES = {"tme": "https://t.me/", "tg": "tg://"}
_PROXY_PARAMS = frozenset({"server", "port", "secret", "kid", "exp", "sig"})
_SOCKS_PARAMS = frozenset({"server", "port", "user", "pass", "kid", "exp", "sig"})
_HEX = frozenset("0123456789abcdefABCDEF")
_LOWER_HEX_RE = re.compile("(?:[0-9a-f]{2})+")
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LAST_OF_8 = frozenset("AEIMQUYcgkosw048")  # 11th character of 8 bytes: 4 data bits, 2 zero
_LAST_OF_64 = frozenset("AQgw")  # 86th character of 64 bytes: 2 data bits, 4 zero bits
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_DOMAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
MAX_LINK_LENGTH = 2048
# base64 to unpadded base64url in one pass (a 64-byte signature leaves exactly two '=').
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _malformed(what: str) -> VerificationError:
    return VerificationError("malformed", what)


class Link(NamedTuple):
    """A parsed proxy link, signed or not.

    An immutable record like our frozen dataclasses, but a NamedTuple: it is built twice per
    signed link, and a frozen dataclass's ``__init__`` costs a few microseconds each time.
    """

    type: str
    """``proxy`` (MTProto) or ``socks``."""
    server: str
    port: int
    secret: str
    """Lower-case hex for ``proxy``; ``user:pass`` (or empty) for ``socks``."""
    kid: str | None = None
    exp: str | None = None
    sig: str | None = None

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return (
            f"{MAGIC}\n{self.type}\n{self.server}\n{self.port}\n{self.secret}\n"
            f"{self.exp}\n{self.kid}\n"
        ).encode()

    def url(self, scheme: str = "tme") -> str:
        """The canonical link text: ``tme`` gives https://t.me/..., ``tg`` gives tg://..."""
        try:
            base = f"{_SCHEMES[scheme]}{self.type}?server={self.server}&port={self.port}"
        except KeyError:
            raise ValueError(f"unknown link scheme {scheme!r}; use tme or tg") from None
        if self.type == "proxy":
            base += f"&secret={self.secret}"
        elif self.secret:
            user, _, password = self.secret.partition(":")
            base += f"&user={quote(user, safe='')}&pass={quote(password, safe='')}"
        if self.sig is None:
            return base
        return f"{base}&kid={self.kid}&exp={self.exp}&sig={self.sig}"

    @property
    def expires_at(self) -> float:
        """The expiry as a Unix time (the start of the ``exp`` hour)."""
        if self.exp is None:
            raise _malformed("link is not signed")
        return _exp_time(self.exp)


def _query(url: str) -> tuple[str, dict[str, str]]:
    if len(url) > MAX_LINK_LENGTH:
        raise _malformed(f"longer than {MAX_LINK_LENGTH} characters")
    if not url.isascii():
        raise _malformed("a link is ASCII text; other characters must be percent-encoded")
    head, sep, query = url.partition("?")
    kind = _PREFIXES.get(head.lower() + sep)
    if kind is None:
        raise _malformed("not a tg://proxy, tg://socks or t.me proxy link")
    if "#" in query:
        raise _malformed("link has a #fragment")
    params: dict[str, str] = {}
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        name = name.lower()
        if not eq or not name:
            raise _malformed(f"parameter {item[:20]!r} has no value")
        if name in params:
            raise _malformed(f"duplicate parameter {name!r}")
        params[name] = _unquote(value) if "%" in value else value
    allowed = _PROXY_PARAMS if kind == "proxy" else _SOCKS_PARAMS
    if not allowed.issuperset(params):
        unknown = min(set(params) - allowed)
        raise _malformed(f"unknown parameter {unknown[:20]!r}")
    return kind, params


def _unquote(value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _malformed("a parameter is not valid percent-encoded UTF-8") from None


def _server(value: str | None) -> str:
    if not value:
        raise _malformed("missing server")
    server = value.lower()
    if len(server) <= 253 and _HOSTNAME.fullmatch(server):
        return server  # host names and IPv4 addresses
    bare = server[1:-1] if server.startswith("[") and server.endswith("]") else server
    try:
        ipaddress.IPv6Address(bare)
    except ValueError:
        raise _malformed("server is not a host name or IP address") from None
    return server


def _port(value: str | None) -> int:
    if not value or len(value) > 5 or not value.isdigit() or not value.isascii():
        raise _malformed("port must be a decimal number")
    port = int(value)
    if not 1 <= port <= 65535 or str(port) != value:
        raise _malformed("port must be 1-65535 written without leading zeros")
    return port


def _secret_hex(value: str | None) -> str:
    """The secret in canonical lower-case hex, whichever encoding the link used."""
    if value and _LOWER_HEX_RE.fullmatch(value):
        check_secret(bytes.fromhex(value))  # already canonical: no re-encoding needed
        return value
    return decode_secret(value).hex()


def decode_secret(value: str | None) -> bytes:
    """A proxy secret in hex or base64url, checked to be one of Telegram's three kinds."""
    if not value:
        raise _malformed("missing secret")
    try:
        if len(value) % 2 == 0 and _HEX.issuperset(value):
            raw = bytes.fromhex(value)
        elif _B64URL.issuperset(value.rstrip("=")):
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        else:
            raise _malformed("secret is neither hex nor base64url")
    except (ValueError, binascii.Error):
        raise _malformed("secret is neither hex nor base64url") from None
    check_secret(raw)
    return raw


def check_secret(raw: bytes) -> None:
    if len(raw) == 16 or (len(raw) == 17 and raw[0] == 0xDD):
        return
    if len(raw) > 17 and raw[0] == 0xEE:
        domain = raw[17:].decode("latin-1").lower()
        if len(domain) <= 253 and _DOMAIN.issuperset(domain):
            return
        raise _malformed("fake-TLS secret has a domain that is not a host name")
    raise _malformed("secret must be 16 bytes, dd+16 bytes or ee+16 bytes+domain")


def _socks_auth(params: dict[str, str]) -> str:
    user, password = params.get("user"), params.get("pass")
    if user is None and password is None:
        return ""
    if user is None or password is None:
        raise _malformed("socks link needs both user and pass, or neither")
    if ":" in user or "\n" in user or "\n" in password:
        raise _malformed("socks user may not contain ':' or a line break")
    return f"{user}:{password}"


def parse_link(url: str) -> Link:
    """Parse a proxy link; raises ``VerificationError('malformed', ...)`` on anything odd."""
    kind, params = _query(url.strip())
    server = _server(params.get("server"))
    port = _port(params.get("port"))
    secret = _secret_hex(params.get("secret")) if kind == "proxy" else _socks_auth(params)
    kid, exp, sig = params.get("kid"), params.get("exp"), params.get("sig")
    if kid is None and exp is None and sig is None:
        return Link(kind, server, port, secret)
    if kid is None or exp is None or sig is None:
        raise _malformed("kid, exp and sig must all be present")
    link = Link(kind, server, port, secret, kid, exp, sig)
    _check_signed_fields(link)
    return link


def _check_signed_fields(link: Link) -> None:
    kid, sig = link.kid or "", link.sig or ""
    # Canonical unpadded base64url of 8 and 64 bytes: the right length, the alphabet, and
    # zero padding bits in the last character (checked without decoding: this is hot).
    if len(kid) != 11 or kid[-1] not in _LAST_OF_8 or not _B64URL.issuperset(kid):
        raise _malformed("kid must be 11 base64url characters")
    if len(sig) != 86 or sig[-1] not in _LAST_OF_64 or not _B64URL.issuperset(sig):
        raise _malformed("sig must be 86 base64url characters")
    _exp_time(link.exp or "")


@lru_cache(maxsize=1024)
def _exp_time(exp: str) -> float:
    if len(exp) != 10 or not exp.isdigit() or not exp.isascii():
        raise _malformed("exp must be YYYYMMDDHH")
    year, month, day, hour = int(exp[:4]), int(exp[4:6]), int(exp[6:8]), int(exp[8:])
    if year < 1970 or not (
        1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1] and hour < 24
    ):
        raise _malformed("exp is not a real date and hour")
    return float(calendar.timegm((year, month, day, hour, 0, 0)))


def format_exp(ts: float) -> str:
    """The ``exp`` value for a Unix time, rounded up to the next whole hour."""
    return _format_hour(-(-int(ts) // 3600))


@lru_cache(maxsize=64)
def _format_hour(hours: int) -> str:
    # A campaign signs thousands of links with the same expiry hour: format it once.
    return time.strftime("%Y%m%d%H", time.gmtime(hours * 3600))


def sign_link(link: Link | str, key: SecretKey, expires_at: float) -> Link:
    """Return the link with ``kid``, ``exp`` and ``sig`` set by ``key``."""
    base = parse_link(link) if isinstance(link, str) else link
    kid, exp = link_kid(key.key_id), format_exp(expires_at)
    unsigned = Link(base.type, base.server, base.port, base.secret, kid, exp)
    signature = key.signer.sign(unsigned.message())
    sig = binascii.b2a_base64(signature, newline=False).translate(_URLSAFE, b"=").decode("ascii")
    return Link(base.type, base.server, base.port, base.secret, kid, exp, sig)


def verify_link(url: str | Link, trust: TrustRoot, now: float) -> Link:
    """Verify a signed link against the trust root; raise ``VerificationError`` with the reason.

    Reasons: ``malformed``, ``unknown-key``, ``revoked-key``, ``bad-signature``, ``expired``.
    """
    link = parse_link(url) if isinstance(url, str) else url
    if link.sig is None or link.kid is None or link.exp is None:
        raise _malformed("link is not signed (no kid, exp and sig)")
    key = trust.link_keys.get(link.kid)
    if key is None:
        raise VerificationError("unknown-key", f"key {link.kid} is not trusted for links")
    if not key.active(now):
        raise VerificationError("revoked-key", f"key {key.name} was revoked {key.revoked}")
    signature = base64.urlsafe_b64decode(link.sig + "==")
    try:
        key.public_key.verifier.verify(signature, link.message())
    except InvalidSignature:
        raise VerificationError("bad-signature", "the link was changed or forged") from None
    if now >= _exp_time(link.exp):
        raise VerificationError("expired", f"link expired at {link.exp[:8]} {link.exp[8:]}:00 UTC")
    return link
