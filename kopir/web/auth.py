"""Operator authentication: the token, login sessions and the failed-login limit (sans-IO).

Theory of operation
-------------------
The operator has one secret, ``[web] token`` (or the environment variable ``env:NAME`` names).
A request proves it either with ``Authorization: Bearer <token>`` (scripts, Prometheus) or
with a session cookie that ``POST /login`` sets after the token was typed into the form
(browsers). Tokens are compared with ``hmac.compare_digest`` over the SHA-256 of their UTF-8
bytes, so the time taken says nothing about how much of a guess was right, or its length.
No token (empty, or the variable unset) means the operator routes are off, not open.

A session id is 32 random bytes (``secrets.token_urlsafe``). :class:`Sessions` keeps only
their SHA-256 digests with an expiry, at most ``MAX_SESSIONS`` of them (the oldest is dropped
first), so the table is bounded and a memory dump holds no usable cookie.

:class:`LoginLimiter` counts failures (a wrong token by form or header) per client address
in a sliding window; past ``failures`` in ``window`` seconds the client is refused with
``429`` until the oldest failure ages out. There is no global budget: it would let anyone lock
the operator out, and a token of 16 or more random characters cannot be guessed from many
addresses either. The table of clients is bounded too. Time is always passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping

MIN_TOKEN = 16
MAX_TOKEN = 512
MAX_SESSIONS = 1000
MAX_CLIENTS = 10_000


class AuthError(ValueError):
    """The configured operator token cannot be used; the message says how to fix it."""


def resolve_token(value: str, environ: Mapping[str, str]) -> str | None:
    """The token ``[web] token`` gives (reading ``env:NAME``), or ``None`` when it is off."""
    if value.startswith("env:"):
        value = environ.get(value[4:], "")
    if not value:
        return None
    if not MIN_TOKEN <= len(value) <= MAX_TOKEN or not value.isprintable() or " " in value:
        raise AuthError(
            f"[web] token must be {MIN_TOKEN}-{MAX_TOKEN} printable characters without spaces; "
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return value


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one (their SHA-256
    digests are compared, so not even the token's length shows in the time taken)."""
    mine = hashlib.sha256(expected.encode("utf-8")).digest()
    theirs = hashlib.sha256(given.encode("utf-8", "replace")).digest()
    return hmac.compare_digest(theirs, mine)


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()


class Sessions:
    """Logged-in browsers: session id digests and when each expires."""

    def __init__(self, lifetime: float, limit: int = MAX_SESSIONS) -> None:
        self.lifetime, self.limit = lifetime, limit
        self._expires: OrderedDict[bytes, float] = OrderedDict()

    def create(self, now: float) -> str:
        session_id = secrets.token_urlsafe(32)
        self._expires[_digest(session_id)] = now + self.lifetime
        while len(self._expires) > self.limit:
            self._expires.popitem(last=False)
        return session_id

    def valid(self, session_id: str, now: float) -> bool:
        key = _digest(session_id)
        expires = self._expires.get(key)
        if expires is None:
            return False
        if now >= expires:
            del self._expires[key]
            return False
        return True

    def end(self, session_id: str) -> None:
        self._expires.pop(_digest(session_id), None)

    def __len__(self) -> int:
        return len(self._expires)


class LoginLimiter:
    """At most ``failures`` failed logins per client per ``window`` seconds."""

    def __init__(self, failures: int = 5, window: float = 60.0) -> None:
        self.failures, self.window = failures, window
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again; 0 when it may try now."""
        times = self._seen.get(client)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.failures:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def failed(self, client: str, now: float) -> None:
        times = self._seen.pop(client, None) or deque(maxlen=self.failures)
        times.append(now)
        self._seen[client] = times  # the most recent failure last, so the oldest goes first
        while len(self._seen) > MAX_CLIENTS:
            self._seen.popitem(last=False)
