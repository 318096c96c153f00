"""The bot's pure parts: commands from message text, link verdicts, reply splitting, flood
control. No Telegram library, no I/O, no clock: ``now`` comes in, values go out.

Theory of operation
-------------------
A message is either a command (``/name`` or ``/name@bot`` then an argument) or free text. Free
text is scanned for proxy links (:func:`kopir.signcmd.find_links`, the same finder as
``kopir verify sms``); each of the first :data:`MAX_LINKS` is verified against the trust root
(``signing.verify_link``) and explained on one line in the reader's language. A link that parses
but carries no signature is called *unsigned*, apart from other malformed links, because
"anyone could have made this" is what a citizen needs to hear.

Telegram refuses messages over 4,096 characters, so every reply goes through
:func:`split_reply`: at line breaks where it can, inside a line only when one line is too long,
and never into more than :data:`MAX_PARTS` messages (the last one then ends with an ellipsis).
A flood of input therefore never becomes a flood of output.

:class:`Flood` allows each user ``limit`` messages per ``window`` seconds; the first message
over the limit earns one warning, the rest are dropped silently until the window passes. Its
memory is bounded: users idle for a window are forgotten, and past :data:`MAX_TRACKED` users the
oldest are dropped.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass

import signing
from kopir.bot.texts import Language, text
from kopir.signcmd import find_links

MAX_MESSAGE = 4096
"""Telegram's limit on one text message, in characters."""
MAX_PARTS = 3
"""Messages one reply may become."""
MAX_LINKS = 10
"""Links verified per message; the rest are counted, not checked."""
MAX_SHOWN = 60
"""Characters of a link shown when it cannot be named by server and port."""
MAX_TRACKED = 100_000
_COMMAND = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?=\s|$)")


@dataclass(frozen=True)
class Command:
    name: str
    """Lower-case, without the slash or the ``@bot`` suffix."""
    argument: str
    """The rest of the message, stripped."""


@dataclass(frozen=True)
class Incoming:
    """One message from one user, as the bot logic sees it (no Telegram types)."""

    user: int
    text: str
    language_code: str | None = None
    """What the user's Telegram app says their language is, if anything."""


@dataclass(frozen=True)
class Photo:
    png: bytes
    caption: str


@dataclass(frozen=True)
class Button:
    label: str
    data: str
    """What comes back in the callback query (at most 64 bytes)."""


@dataclass(frozen=True)
class Reply:
    """What to send back: text messages (each within Telegram's limit), then photos; the
    buttons go under the last text message."""

    texts: tuple[str, ...] = ()
    photos: tuple[Photo, ...] = ()
    buttons: tuple[Button, ...] = ()

    @classmethod
    def say(cls, message: str, buttons: tuple[Button, ...] = ()) -> Reply:
        return cls(split_reply(message), (), buttons)


def parse_command(message: str) -> Command | None:
    """The command at the start of ``message``, or None for free text."""
    match = _COMMAND.match(message)
    if match is None:
        return None
    return Command(match.group(1).lower(), message[match.end() :].strip())


def split_reply(reply: str, limit: int = MAX_MESSAGE, parts: int = MAX_PARTS) -> tuple[str, ...]:
    """``reply`` as at most ``parts`` messages of at most ``limit`` characters each."""
    chunks: list[str] = []
    current = ""
    for line in reply.splitlines() or [""]:
        pieces = [line[i : i + limit] for i in range(0, len(line), limit)] or [""]
        for piece in pieces:
            joined = f"{current}\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
                continue
            chunks.append(current)
            current = piece
    chunks.append(current)
    chunks = [c for c in chunks if c.strip()] or ["…"]
    if len(chunks) > parts:
        chunks = chunks[:parts]
        chunks[-1] = chunks[-1][: limit - 1] + "…"
    return tuple(chunks)


def utc(seconds: float) -> str:
    """A time as people read it: ``2025-01-05 14:00 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _where(candidate: str) -> str:
    """How a link is named in a verdict: its server and port, else its start."""
    try:
        link = signing.parse_link(candidate)
    except signing.VerificationError:
        short = candidate if len(candidate) <= MAX_SHOWN else candidate[: MAX_SHOWN - 1] + "…"
        return short
    return f"{link.server}:{link.port}"


def verdict(
    candidate: str, trust: signing.TrustRoot, now: float, language: Language
) -> tuple[str, str]:
    """(reason, one line explaining it) for one link: ``valid``, ``unsigned`` or a
    ``signing.VerificationError`` reason."""
    try:
        link = signing.verify_link(candidate, trust, now)
    except signing.VerificationError as exc:
        return exc.reason, _explain_failure(candidate, exc, trust, language)
    key = trust.link_keys[link.kid or ""]
    until = utc(_exp_seconds(link.exp or ""))
    return "valid", text(language, "valid", name=key.name, until=until)


def _explain_failure(
    candidate: str, exc: signing.VerificationError, trust: signing.TrustRoot, language: Language
) -> str:
    if exc.reason == "malformed":
        try:
            unsigned = signing.parse_link(candidate).sig is None
        except signing.VerificationError:
            unsigned = False
        if unsigned:
            return text(language, "unsigned")
        return text(language, "malformed", what=exc.detail[:200])
    link = signing.parse_link(candidate)
    if exc.reason == "expired":
        return text(language, "expired", until=utc(_exp_seconds(link.exp or "")))
    if exc.reason == "revoked-key":
        key = trust.link_keys.get(link.kid or "")
        revoked = key.revoked_at if key else None
        return text(
            language,
            "revoked-key",
            name=key.name if key else link.kid,
            when=utc(revoked) if revoked is not None else "?",
        )
    if exc.reason == "unknown-key":
        return text(language, "unknown-key", kid=link.kid)
    return text(language, "bad-signature")


def _exp_seconds(exp: str) -> float:
    """The ``exp`` field (``YYYYMMDDHH``, UTC) as a Unix time."""
    import calendar

    parsed = time.strptime(exp, "%Y%m%d%H")
    return float(calendar.timegm(parsed))


def explain_links(
    message: str, trust: signing.TrustRoot, now: float, language: Language
) -> tuple[str, list[str]]:
    """The reply to a message with links: a head line, then one numbered verdict per link.
    Also returns the reasons, in order, for the caller's counters. No links: the hint."""
    links = find_links(message)
    if not links:
        return text(language, "no_links"), []
    lines = [text(language, "verify_head", count=len(links))]
    reasons = []
    for n, candidate in enumerate(links[:MAX_LINKS], 1):
        reason, line = verdict(candidate, trust, now, language)
        reasons.append(reason)
        lines.append(f"{n}. {_where(candidate)}\n{line}")
    if len(links) > MAX_LINKS:
        lines.append(text(language, "verify_more", count=len(links) - MAX_LINKS))
    return "\n\n".join(lines), reasons


class Flood:
    """Per-user message budget: ``limit`` messages in any ``window`` seconds (sans-IO)."""

    def __init__(self, limit: int, window: float, max_tracked: int = MAX_TRACKED) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"flood limit must be >= 1 and window > 0, got {limit}, {window}")
        self.limit, self.window, self.max_tracked = limit, window, max_tracked
        self._seen: dict[int, deque[float]] = {}
        self._warned: set[int] = set()

    def check(self, user: int, now: float) -> str:
        """``ok`` (handle it), ``warn`` (say "slow down" once) or ``drop`` (say nothing)."""
        times = self._seen.pop(user, None) or deque(maxlen=self.limit)
        self._seen[user] = times  # re-inserted: the dict stays ordered oldest-active first
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            self._warned.discard(user)
            self._bound()
            return "ok"
        if user in self._warned:
            return "drop"
        self._warned.add(user)
        return "warn"

    def forget(self, now: float) -> None:
        """Drop users with nothing in the current window (the job queue calls this)."""
        idle = [u for u, t in self._seen.items() if not t or now - t[-1] >= self.window]
        for user in idle:
            del self._seen[user]
            self._warned.discard(user)

    def __len__(self) -> int:
        return len(self._seen)

    def _bound(self) -> None:
        while len(self._seen) > self.max_tracked:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._warned.discard(oldest)


__all__ = [
    "MAX_LINKS",
    "MAX_MESSAGE",
    "Button",
    "Command",
    "Flood",
    "Incoming",
    "Photo",
    "Reply",
    "explain_links",
    "parse_command",
    "split_reply",
    "utc",
    "verdict",
]
