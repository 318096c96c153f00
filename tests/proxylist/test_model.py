"""The proxy model: relays to links and back, in every form a Telegram client reads."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxylist.model import Relay, relay_from_link
from signing import Link

DOMAINS = st.from_regex(r"[a-z0-9]{1,12}\.(com|org|kz)", fullmatch=True)


@st.composite
def relays(draw: st.DrawFn) -> Relay:
    mode = draw(st.sampled_from(["ee", "dd", "classic"]))
    return Relay(
        draw(st.sampled_from(["a", "relay-1"])),
        draw(st.sampled_from(["relay.example.org", "203.0.113.9", "2001:db8::7"])),
        draw(st.integers(1, 65535)),
        draw(st.binary(min_size=16, max_size=16)),
        mode,
        draw(DOMAINS) if mode == "ee" else None,
    )


@given(relays(), st.sampled_from(["tme", "tg"]), st.booleans())
def test_a_relay_survives_its_link_in_every_form(relay: Relay, scheme: str, b64: bool) -> None:
    secret = relay.secret_hex
    if b64:
        secret = base64.urlsafe_b64encode(bytes.fromhex(secret)).decode().rstrip("=")
    text = Link("proxy", relay.server, relay.port, secret).url(scheme)
    back = relay_from_link(text, relay.name)
    assert back == relay
    assert back.secret_hex == relay.secret_hex


def test_socks_and_bad_domains_are_refused() -> None:
    with pytest.raises(ValueError, match="socks"):
        relay_from_link("tg://socks?server=h.example&port=1080&user=a&pass=b")
    with pytest.raises(ValueError, match="not a proxy link"):
        relay_from_link("https://t.me/proxy?server=h&port=0&secret=00")


@given(st.text(max_size=300))
def test_any_text_is_a_relay_or_a_value_error(text: str) -> None:
    try:
        relay = relay_from_link(text)
    except ValueError:
        return
    assert len(relay.key) == 16 and 1 <= relay.port <= 65535


@given(st.binary(min_size=17, max_size=60))
def test_any_secret_bytes_are_a_relay_or_a_value_error(raw: bytes) -> None:
    text = f"tg://proxy?server=h.example&port=443&secret={raw.hex()}"
    try:
        relay = relay_from_link(text)
    except ValueError:
        return
    assert relay.secret_hex == raw.hex()
