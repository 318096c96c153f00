"""The built-in local test DC: the prober's full path passes through a real relay to it, and it
echoes what a Telethon client sends; its frame reader never takes garbage."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxylist import probe_relay
from relay import LocalTestDC
from relay.testdc import ABRIDGED, INTERMEDIATE, PADDED, Frames, res_pq_for
from tests.proxylist.test_probe import TIMEOUT, port_of, relay_entry, relay_server, stage_names
from tests.relay.fakedc import make_req_pq_multi, parse_res_pq


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["ee", "dd", "classic"])
async def test_prober_full_path_through_a_relay_to_the_local_dc(mode: str) -> None:
    dc = await LocalTestDC().start()
    try:
        modes = frozenset({mode})
        async with relay_server(dc_port=dc.port, modes=modes) as server:
            result = await probe_relay(relay_entry(port_of(server), mode), timeout=TIMEOUT)
    finally:
        await dc.stop()
    assert result.ok, stage_names(result)
    assert stage_names(result)[-1] == ("dc", True, "")


def test_res_pq_echoes_the_nonce_and_ignores_other_messages() -> None:
    nonce = os.urandom(16)
    answer = res_pq_for(make_req_pq_multi(nonce))
    assert answer is not None and parse_res_pq(answer) == nonce
    assert res_pq_for(b"\x00" * 40) is None
    assert res_pq_for(os.urandom(40)) is None


@pytest.mark.parametrize("tag", [ABRIDGED, INTERMEDIATE, PADDED])
def test_frames_round_trip_split_anywhere(tag: bytes) -> None:
    frames = Frames(tag)
    payloads = [os.urandom(4 * n) for n in (1, 10, 200, 0x7F, 0x80)]
    stream = b"".join(frames.encode(p) for p in payloads)
    got = [p for i in range(0, len(stream), 7) for p in frames.feed(stream[i : i + 7])]
    assert got == payloads


@given(st.sampled_from([ABRIDGED, INTERMEDIATE, PADDED]), st.binary(max_size=2000))
def test_frames_take_any_bytes_or_refuse_with_value_error(tag: bytes, data: bytes) -> None:
    frames = Frames(tag)
    try:
        for payload in frames.feed(data):
            assert len(payload) <= 1 << 20
    except ValueError as exc:
        assert "over the limit" in str(exc)


def test_unknown_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transport tag"):
        Frames(b"\x00\x01\x02\x03")
