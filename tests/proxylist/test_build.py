"""The list builder: versions, chaining, renewal, atomic storage under a real SIGKILL, signing
and the log (DESIGN.md §5.4), with probe results made by hand (the prober is tested apart)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import signing
from proxylist import STAGES, PortResult, ProbeResult, Relay, StageResult
from proxylist.build import (
    PAUSE_ENV,
    ListPolicy,
    ListStore,
    build_list,
    healthy_entries,
    publish,
)
from proxylist.errors import BuildError

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
POLICY = ListPolicy("kopir.test", lifetime=72 * HOUR, renew_before=24 * HOUR)
ROOT = Path(__file__).resolve().parents[2]

ALMATY = Relay("almaty", "relay1.example.org", 443, bytes(range(16)), "ee", "example.com",
               alt_ports=(8443, 80), tags=("kz",))  # fmt: skip
BERLIN = Relay("berlin", "relay2.example.org", 8443, bytes(range(16, 32)), "dd")
OSLO = Relay("oslo", "10.0.0.3", 443, b"\x07" * 16, "classic", tags=("eu", "backup"))
RELAYS = (ALMATY, BERLIN, OSLO)


def port_result(port: int, fail_at: str | None = None, mode: str = "ee", rtt: float = 12.3):
    stages = []
    for stage in STAGES:
        if stage == "tls-hmac" and mode != "ee":
            continue
        ok = stage != fail_at
        stages.append(StageResult(stage, ok, "" if ok else "refused", 1.0))
        if not ok:
            break
    opened = fail_at != "connect"
    return PortResult(port, tuple(stages), rtt if opened else None)


def probed(relay: Relay, *, working: Sequence[int] = (), at: float = NOW, rtt: float = 12.3):
    """A result in which exactly the ``working`` ports pass; the others fail at connect."""
    ports = tuple(
        port_result(p, None if p in working else "connect", relay.mode, rtt) for p in relay.ports
    )
    return ProbeResult(relay, ports, at)


def all_up(at: float = NOW, rtt: float = 12.3) -> list[ProbeResult]:
    return [probed(r, working=r.ports, at=at, rtt=rtt) for r in RELAYS]


# -- the core -------------------------------------------------------------------------------


def test_first_build_is_version_1_with_only_healthy_relays() -> None:
    results = [
        probed(ALMATY, working=(8443,)),  # the main port is blocked; one port stayed open
        probed(BERLIN, working=()),
        probed(OSLO, working=(443,), rtt=40.6),
    ]
    build = build_list(RELAYS, results, None, POLICY, NOW)
    doc = signing.parse_list(build.data)
    assert (build.reason, doc.version, doc.previous) == ("first", 1, None)
    assert (build.healthy, build.relays) == (2, 3)
    assert (doc.publisher, doc.issued, doc.expires) == (
        "kopir.test", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"
    )  # fmt: skip
    assert [p["server"] for p in doc.proxies] == ["10.0.0.3", "relay1.example.org"]
    oslo, almaty = doc.proxies
    assert almaty == {
        "type": "proxy",
        "server": "relay1.example.org",
        "port": 8443,
        "secret": ALMATY.secret_hex,
        "domain": "example.com",
        "ports_tried": [443, 8443, 80],
        "last_ok": "2026-01-01T00:00:00Z",
        "rtt_ms": 12,
        "tags": ["kz"],
    }
    assert oslo["secret"] == (b"\x07" * 16).hex() and oslo["domain"] is None
    assert oslo["rtt_ms"] == 41 and oslo["tags"] == ["eu", "backup"]


def test_order_of_relays_and_results_does_not_change_the_bytes() -> None:
    first = build_list(RELAYS, all_up(), None, POLICY, NOW).data
    again = build_list(RELAYS[::-1], all_up()[::-1], None, POLICY, NOW).data
    assert first == again


def test_v2_chains_the_hash_of_v1_when_a_relay_goes_down(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    v1 = publish(store, RELAYS, all_up(), POLICY, NOW)
    assert v1.build.reason == "first"
    v1_bytes = store.path.read_bytes()
    down = [probed(ALMATY, working=ALMATY.ports), probed(BERLIN), probed(OSLO, working=(443,))]
    v2 = publish(store, RELAYS, down, POLICY, NOW + HOUR)
    doc = signing.parse_list(store.path.read_bytes())
    assert (v2.build.reason, doc.version) == ("changed", 2)
    assert doc.previous == hashlib.sha256(v1_bytes).hexdigest()
    assert [p["server"] for p in doc.proxies] == ["10.0.0.3", "relay1.example.org"]
    assert store.versions() == [1, 2]
    assert store.version_path(1).read_bytes() == v1_bytes
    assert store.version_path(2).read_bytes() == store.path.read_bytes()


def test_nothing_changed_means_no_new_version(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    publish(store, RELAYS, all_up(), POLICY, NOW)
    before = store.path.read_bytes()
    # New RTTs and probe times are not a change: the same relays work on the same ports.
    again = publish(store, RELAYS, all_up(at=NOW + 2 * HOUR, rtt=99.0), POLICY, NOW + 2 * HOUR)
    assert again.build.reason == "unchanged" and not again.build.changed
    assert again.build.document.version == 1
    assert store.path.read_bytes() == before and store.versions() == [1]


def test_a_new_working_port_or_tag_is_a_change() -> None:
    v1 = build_list(RELAYS, all_up(), None, POLICY, NOW)
    moved = [probed(ALMATY, working=(80,)), *all_up()[1:]]
    assert build_list(RELAYS, moved, v1.data, POLICY, NOW + 1).reason == "changed"
    retagged = Relay(**{**ALMATY.__dict__, "tags": ("kz", "new")})
    relays = (retagged, BERLIN, OSLO)
    results = [probed(r, working=r.ports) for r in relays]
    assert build_list(relays, results, v1.data, POLICY, NOW + 1).reason == "changed"


def test_near_expiry_the_same_set_is_reissued() -> None:
    v1 = build_list(RELAYS, all_up(), None, POLICY, NOW)
    just_before = NOW + POLICY.lifetime - POLICY.renew_before - 1
    assert build_list(RELAYS, all_up(), v1.data, POLICY, just_before).reason == "unchanged"
    due = NOW + POLICY.lifetime - POLICY.renew_before
    renewed = build_list(RELAYS, all_up(), v1.data, POLICY, due)
    assert renewed.reason == "renew" and renewed.document.version == 2
    assert renewed.document.previous == hashlib.sha256(v1.data).hexdigest()
    assert renewed.document.proxies == v1.document.proxies
    assert renewed.document.expires == "2026-01-06T00:00:00Z"


def test_no_healthy_relay_keeps_the_current_version(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    with pytest.raises(BuildError, match="none of the 3 relays is healthy, so no list"):
        publish(store, RELAYS, [probed(r) for r in RELAYS], POLICY, NOW)
    assert not store.path.exists()
    publish(store, RELAYS, all_up(), POLICY, NOW)
    with pytest.raises(BuildError, match="version 1 is kept"):
        publish(store, RELAYS, [probed(r) for r in RELAYS], POLICY, NOW + HOUR)
    assert signing.parse_list(store.path.read_bytes()).version == 1


def test_results_for_relays_not_configured_are_not_published() -> None:
    stranger = Relay("stranger", "evil.example.net", 443, b"\x01" * 16, "dd")
    changed_key = Relay(**{**BERLIN.__dict__, "key": b"\x02" * 16})
    results = [probed(stranger, working=(443,)), probed(changed_key, working=(8443,))]
    assert healthy_entries(RELAYS, results) == []
    with pytest.raises(BuildError, match="repeated: almaty"):
        healthy_entries((ALMATY, ALMATY), [])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"publisher": " "}, "publisher name is empty"),
        ({"lifetime": 0}, "lifetime must be positive"),
        ({"renew_before": 72 * HOUR}, "renew_before must be shorter"),
    ],
)
def test_bad_policy_is_refused(kwargs: dict, message: str) -> None:
    args = {"publisher": "p", "lifetime": 72 * HOUR, "renew_before": HOUR, **kwargs}
    with pytest.raises(BuildError, match=message):
        ListPolicy(**args)


def test_damaged_or_missing_current_list_is_an_error_not_a_restart(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    publish(store, RELAYS, all_up(), POLICY, NOW)
    store.path.write_bytes(b'{"format": "kopir-list/1"}')
    with pytest.raises(BuildError, match="current list is damaged"):
        publish(store, RELAYS, all_up(), POLICY, NOW)
    store.path.unlink()
    # Starting again at version 1 would look like a rollback to every verifier.
    with pytest.raises(BuildError, match="list.json is missing but"):
        publish(store, RELAYS, all_up(), POLICY, NOW)


def test_a_second_builder_is_refused_while_one_holds_the_lock(tmp_path: Path) -> None:
    store = ListStore(tmp_path)
    with store.lock(), pytest.raises(BuildError, match="another list build is running"):
        publish(ListStore(tmp_path), RELAYS, all_up(), POLICY, NOW)
    publish(store, RELAYS, all_up(), POLICY, NOW)  # released afterwards


# -- signing and the log --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[signing.SecretKey, Path]:
    """An online key and a trust root (lists threshold 1) naming it."""
    home = tmp_path_factory.mktemp("keys")
    _, key_path, key = signing.generate_key_pair(home, "publisher", None)
    root = signing.TrustRoot(
        1,
        "2099-01-01T00:00:00Z",
        (signing.TrustKey("publisher", key.public_key, frozenset(signing.ROLES)),),
        dict.fromkeys(signing.ROLES, 1),
    )
    data = root.encode()
    (home / "trust.json").write_bytes(data)
    sig = signing.sign_trust_root(data, key)
    signing.save_signature(home / signing.signature_name("trust.json", sig), sig)
    return key, home


def verify(store: ListStore, keys: tuple[signing.SecretKey, Path], now: float = NOW):
    trust = signing.parse_trust_root((keys[1] / "trust.json").read_bytes())
    sigs = [signing.load_signature(p) for p in store.signature_paths()]
    return signing.verify_list(store.path.read_bytes(), sigs, trust, now)


def test_signed_versions_verify_and_stale_signatures_go(tmp_path: Path, keys) -> None:
    key, _ = keys
    store = ListStore(tmp_path)
    v1 = publish(store, RELAYS, all_up(), POLICY, NOW, key=key)
    assert v1.signed_by == (key.hex_id,)
    assert verify(store, keys).document.version == 1
    publish(store, RELAYS, all_up()[:2], POLICY, NOW + HOUR, key=key)
    assert verify(store, keys, NOW + HOUR).document.version == 2
    assert len(store.signature_paths()) == 1
    kept = store.version_path(1).with_name(f"1.json.{key.hex_id}.minisig")
    assert signing.load_signature(kept).trusted_comment.startswith("kopir-list version=1 ")


def test_unsigned_build_is_signed_offline_later_and_kept(tmp_path: Path, keys) -> None:
    key, _ = keys
    store = ListStore(tmp_path)
    v1 = publish(store, RELAYS, all_up(), POLICY, NOW)
    assert v1.signed_by == () and store.signature_paths() == []
    # The offline step is what `kopir sign list` does: a signature beside list.json.
    sig = signing.sign_list(store.path.read_bytes(), key)
    signing.save_signature(store.path.with_name(signing.signature_name("list.json", sig)), sig)
    again = publish(store, RELAYS, all_up(), POLICY, NOW + HOUR)  # no key this time
    assert again.signed_by == (key.hex_id,) and verify(store, keys).document.version == 1
    assert store.version_path(1).with_name(f"1.json.{key.hex_id}.minisig").exists()


def test_a_round_cut_short_is_completed_by_the_next(tmp_path: Path, keys) -> None:
    key, _ = keys
    store = ListStore(tmp_path)
    publish(store, RELAYS, all_up(), POLICY, NOW, key=key)
    # The state a crash right after renaming list.json leaves: no signature, no history copy.
    for path in [*store.signature_paths(), *store.versions_dir.iterdir()]:
        path.unlink()
    again = publish(store, RELAYS, all_up(), POLICY, NOW + HOUR, key=key)
    assert again.build.reason == "unchanged" and again.signed_by == (key.hex_id,)
    assert verify(store, keys).document.version == 1 and store.versions() == [1]


def test_each_version_is_logged_once(tmp_path: Path) -> None:
    log = signing.LogStore.create(tmp_path / "log", "kopir.test/log")
    store = ListStore(tmp_path / "lists")
    assert publish(store, RELAYS, all_up(), POLICY, NOW, log=log).log_index == 0
    assert publish(store, RELAYS, all_up(), POLICY, NOW + 1, log=log).log_index == 0
    assert publish(store, RELAYS, all_up()[1:], POLICY, NOW + 2, log=log).log_index == 1
    assert log.size == 2 and log.entry(1) == store.path.read_bytes()


# -- a real crash mid-write -----------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
import signing
from proxylist.build import ListStore, publish
from tests.proxylist.test_build import NOW, POLICY, RELAYS, all_up
key = signing.load_secret_key(Path(sys.argv[2]))
publish(ListStore(Path(sys.argv[1])), RELAYS[:1], all_up()[:1], POLICY, NOW + 60, key=key)
"""


def test_sigkill_while_writing_leaves_the_previous_version_valid(tmp_path: Path, keys) -> None:
    key, home = keys
    store = ListStore(tmp_path / "lists")
    publish(store, RELAYS, all_up(), POLICY, NOW, key=key)
    v1 = store.path.read_bytes()
    paused = tmp_path / "paused"
    env = {**os.environ, PAUSE_ENV: str(paused)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store.dir), str(home / "publisher.key")],
        cwd=ROOT, env=env, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(600):  # the child signals through the file; bounded at ~60 s
            if paused.exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert paused.exists(), child.stderr.read().decode() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()
    leftovers = list(store.dir.glob(".list.json.*.tmp"))
    assert len(leftovers) == 1 and len(leftovers[0].read_bytes()) > 0  # v2 was half-published
    assert store.path.read_bytes() == v1 and store.versions() == [1]
    assert verify(store, keys).document.version == 1
    # The next build clears the leftover and chains from v1 as if nothing happened.
    v2 = publish(store, RELAYS[:1], all_up()[:1], POLICY, NOW + 120, key=key)
    assert v2.build.document.version == 2 and not leftovers[0].exists()
    assert v2.build.document.previous == hashlib.sha256(v1).hexdigest()
    assert verify(store, keys, NOW + 120).document.version == 2


# -- properties -----------------------------------------------------------------------------

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
ports = st.integers(1, 65535)


@st.composite
def relay_and_result(draw: st.DrawFn, index: int) -> tuple[Relay, ProbeResult]:
    mode = draw(st.sampled_from(["ee", "dd", "classic"]))
    relay = Relay(
        name=f"r{index}",
        server=draw(hosts),
        port=draw(ports),
        key=draw(st.binary(min_size=16, max_size=16)),
        mode=mode,
        domain=draw(hosts) if mode == "ee" else None,
        alt_ports=tuple(draw(st.lists(ports, max_size=3))),
        tags=tuple(draw(st.lists(st.text(max_size=8), max_size=3))),
    )
    outcome = st.sampled_from([None, "connect", "tls-hmac", "dc"])
    rtt = st.floats(0, 10_000, allow_nan=False)
    port_results = tuple(port_result(p, draw(outcome), mode, draw(rtt)) for p in relay.ports)
    at = draw(st.floats(NOW - 1e6, NOW, allow_nan=False))
    return relay, ProbeResult(relay, port_results, at)


fleets = st.integers(1, 6).flatmap(lambda n: st.tuples(*(relay_and_result(i) for i in range(n))))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets, fleets, st.floats(0, 200 * HOUR, allow_nan=False))
def test_every_document_the_builder_emits_parses(first, second, later) -> None:
    current = None
    for fleet, now in ((first, NOW), (second, NOW + later)):
        relays = [r for r, _ in fleet]
        results = [p for _, p in fleet]
        try:
            build = build_list(relays, results, current, POLICY, now)
        except BuildError as exc:
            assert not any(p.ok for p in results) and "none of the" in str(exc)
            continue
        doc = signing.parse_list(build.data)
        assert doc == build.document and build.data == doc.encode()
        assert len(doc.proxies) <= sum(p.ok for p in results)
        healthy_ports = {(r.relay.server, port) for r in results for port in r.working_ports}
        assert all((e["server"], e["port"]) in healthy_ports for e in doc.proxies)
        if current is not None:
            old = signing.parse_list(current)
            step = 0 if build.reason == "unchanged" else 1
            assert doc.version == old.version + step
        current = build.data
