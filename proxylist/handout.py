"""Signed links for the relays distribution hands out.

Theory of operation
-------------------
A signed link (DESIGN.md §5.2) covers the relay's type, server, port and secret, the expiry
hour and the key id, and nothing about who receives it. So every recipient given the same relay
in the same expiry hour gets the very same link, and a campaign to a million people signs one
link per relay per hour, not one per person: :class:`LinkBook` keeps them by (relay name, expiry
hour). The expiry is ``now + lifetime``, rounded up to the hour as the link format does.

Nothing here reads the clock or does I/O: ``now`` comes in, link text goes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxylist.errors import ProxylistError
from proxylist.model import Relay
from signing import Link, SecretKey, format_exp, sign_link

_HOUR = 3600
SCHEMES = ("tme", "tg")


class LinkBook:
    """Signed link text per relay and expiry hour, signed once and then reused."""

    def __init__(
        self, key: SecretKey, relays: Iterable[Relay], lifetime: float, scheme: str = "tme"
    ) -> None:
        if scheme not in SCHEMES:
            raise ProxylistError(f"unknown link scheme {scheme!r}; use tme or tg")
        if lifetime < _HOUR:
            raise ProxylistError(f"a link lifetime of {lifetime:g} s is under an hour")
        self.key = key
        self.lifetime = lifetime
        self.scheme = scheme
        self.relays = {relay.name: relay for relay in relays}
        self._links: dict[tuple[str, str], str] = {}
        self.signed = 0
        """How many links this book has signed (the rest were reused)."""

    def link(self, name: str, now: float) -> str:
        """The signed link for relay ``name``, expiring ``lifetime`` after ``now``."""
        expires = now + self.lifetime
        slot = (name, format_exp(expires))
        text = self._links.get(slot)
        if text is None:
            text = self._sign(name, expires)
            self._links[slot] = text
        return text

    def links(self, names: Sequence[str], now: float) -> tuple[str, ...]:
        """:meth:`link` for each name, in order (one recipient's set)."""
        return tuple(self.link(name, now) for name in names)

    def signable(self, names: Iterable[str]) -> tuple[str, ...]:
        """Those of ``names`` this book has a relay for, in order. A set handed out again
        under the rate limit may name a relay that has since left the config."""
        return tuple(name for name in names if name in self.relays)

    def forget_before(self, now: float) -> None:
        """Drop links whose expiry hour is already past, so the book stays small."""
        current = format_exp(now)
        self._links = {slot: t for slot, t in self._links.items() if slot[1] >= current}

    def _sign(self, name: str, expires: float) -> str:
        try:
            relay = self.relays[name]
        except KeyError:
            raise ProxylistError(f"no relay named {name!r} to sign a link for") from None
        # Through the text form, so the server is normalised exactly as a verifier will read it.
        unsigned = Link("proxy", relay.server, relay.port, relay.secret_hex).url()
        self.signed += 1
        return sign_link(unsigned, self.key, expires).url(self.scheme)
