"""Clients nobody here wrote (Telethon, telethonfaketls) through our relay to the fake DC."""

from __future__ import annotations

import os

import pytest

from relay import keystream
from tests.relay.clients import fast_telethon_aes, probe, roundtrip
from tests.relay.test_relay import DOMAIN, KEY, running

MIB = 1 << 20
SECRETS = {
    "dd": "dd" + KEY.hex(),
    "classic": KEY.hex(),
    "faketls": "ee" + KEY.hex() + DOMAIN.encode().hex(),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["dd", "classic", "faketls"])
async def test_real_client_gets_res_pq_through_the_relay(kind: str) -> None:
    async with running(modes=frozenset({"ee", "dd", "classic"})) as (relay, dc, _):
        await probe(kind, "127.0.0.1", relay.addresses[0][1], SECRETS[kind])  # type: ignore[arg-type]
        assert dc.connections == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["dd", "classic", "faketls"])
@pytest.mark.parametrize("switch_after", [None, 64 * 1024], ids=["ctr", "gcm-after-64k"])
async def test_real_client_moves_10_mib_each_way_byte_exact(
    kind: str, switch_after: int | None
) -> None:
    """Both keystream engines (relay.keystream), whatever this CPU would pick for itself."""
    payloads = [os.urandom(MIB - 4 * i) for i in range(10)] + [os.urandom(40 * 4)]
    async with running(modes=frozenset({"ee", "dd", "classic"})) as (relay, dc, _):
        previous = keystream.use_gcm(switch_after)  # after start(), which sets its own
        try:
            with fast_telethon_aes():
                replies = await roundtrip(
                    kind,  # type: ignore[arg-type]
                    "127.0.0.1",
                    relay.addresses[0][1],
                    SECRETS[kind],
                    payloads,
                    timeout=120,
                )
        finally:
            keystream.use_gcm(previous)
        assert replies == payloads
        assert dc.bytes_in >= sum(map(len, payloads)) >= 10 * MIB - 200
        assert (
            relay.metrics.get("relay_bytes_total", secret="main", direction="down")
            >= 10 * MIB - 200
        )


@pytest.mark.asyncio
async def test_classic_is_refused_unless_enabled() -> None:
    async with running(modes=frozenset({"ee", "dd"})) as (relay, dc, mask):
        with pytest.raises(Exception):  # noqa: B017 - Telethon raises its own error types
            await probe(
                "classic", "127.0.0.1", relay.addresses[0][1], SECRETS["classic"], timeout=10
            )
        assert dc.connections == 0
        assert relay.metrics.get("relay_masked_total") == 1
