"""LinkBook: one signature per relay and expiry hour, and every link it gives verifies."""

from __future__ import annotations

import pytest

from proxylist.errors import ProxylistError
from proxylist.handout import LinkBook
from proxylist.model import Relay
from signing import verify_link
from signing.errors import VerificationError
from signing.minisign import SecretKey
from signing.trust import TrustRoot

NOW = 1_790_000_000.0  # 2026-09-21
RELAYS = [
    Relay("a", "Relay-A.Example.org", 443, bytes(range(16)), "ee", "example.com"),
    Relay("b", "203.0.113.7", 8443, bytes(16), "dd"),
    Relay("c", "2001:db8::1", 443, b"\x01" * 16, "classic"),
]


@pytest.mark.parametrize("scheme", ["tme", "tg"])
def test_every_link_verifies_and_names_its_relay(
    key: SecretKey, root: TrustRoot, scheme: str
) -> None:
    book = LinkBook(key, RELAYS, lifetime=72 * 3600, scheme=scheme)
    links = book.links(["a", "b", "c"], NOW)
    assert links[0].startswith("https://t.me/proxy?" if scheme == "tme" else "tg://proxy?")
    for relay, text in zip(RELAYS, links, strict=True):
        link = verify_link(text, root, NOW)
        assert (link.server, link.port, link.secret) == (
            relay.server.lower(),
            relay.port,
            relay.secret_hex,
        )
        assert NOW + 72 * 3600 <= link.expires_at < NOW + 73 * 3600


def test_one_signature_per_relay_and_hour(key: SecretKey) -> None:
    book = LinkBook(key, RELAYS, lifetime=72 * 3600)
    first = [book.links(["a", "b"], NOW + i) for i in range(1000)]
    assert book.signed == 2
    assert len(set(first)) == 1
    later = book.links(["a", "b"], NOW + 3600)
    assert later != first[0]
    assert book.signed == 4


def test_forget_before_drops_only_expired_links(key: SecretKey) -> None:
    book = LinkBook(key, RELAYS, lifetime=3600)
    old = book.link("a", NOW)
    book.forget_before(NOW + 3 * 3600)
    assert book.link("a", NOW) == old  # signed again, byte for byte (Ed25519 is deterministic)
    assert book.signed == 2
    kept = book.link("b", NOW + 10 * 3600)
    book.forget_before(NOW + 10 * 3600)
    assert book.link("b", NOW + 10 * 3600) == kept
    assert book.signed == 3


def test_a_link_past_its_hour_is_refused(key: SecretKey, root: TrustRoot) -> None:
    text = LinkBook(key, RELAYS, lifetime=3600).link("b", NOW)
    with pytest.raises(VerificationError) as info:
        verify_link(text, root, NOW + 3 * 3600)
    assert info.value.reason == "expired"


def test_mistakes_are_clear(key: SecretKey) -> None:
    with pytest.raises(ProxylistError, match="no relay named 'z'"):
        LinkBook(key, RELAYS, 3600).link("z", NOW)
    with pytest.raises(ProxylistError, match="unknown link scheme"):
        LinkBook(key, RELAYS, 3600, scheme="http")
    with pytest.raises(ProxylistError, match="under an hour"):
        LinkBook(key, RELAYS, 60)
