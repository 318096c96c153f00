"""``kopir audit`` against real publisher directories.

Each publisher is made with the real tools: ``kopir run``'s ``prepare`` (online key, trust
root, log) and ``publish_checkpoint``, ``proxylist.publish`` (list versions, signatures, log
entries) fed by real probes of in-process ``relay`` servers in front of the fake DC. The
audit reads the directory (``DirSource``) or the same material over HTTP from the publisher's
real web app (``kopir.web``) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import signing
from kopir.audit import Report
from kopir.auditrun import AuditState, Options, run_audit
from kopir.auditsource import AuditError, DirSource, Source, UrlSource
from kopir.config import load_config
from kopir.runner import Setup, prepare, publish_checkpoint
from kopir.web import StatusHistory, bound_port, make_app, serve_web
from proxylist import ListPolicy, ListStore, ProbeResult, Relay, probe_relays, publish
from relay import Relay as RelayServer
from relay import RelaySettings, Secret
from tests.cli import kopir
from tests.relay.fakedc import FakeDC
from tests.relay.test_relay import KEY, OTHER, MaskHost

KEY2 = bytes.fromhex("00112233445566778899aabbccddeeff")
ORIGIN = "kopir.test/log"
HOUR = 3600.0
POLICY = ListPolicy("kopir.test", lifetime=72 * HOUR, renew_before=24 * HOUR)
NO_PROBE = Options(probe=False)
PROBE = Options(probe_timeout=5.0)


# -- relays and publishers ------------------------------------------------------------------


@asynccontextmanager
async def relay_server(secrets: dict[str, bytes], dc: int, mask: int) -> AsyncIterator[RelayServer]:
    server = RelayServer(
        RelaySettings(
            listen=(("127.0.0.1", 0),),
            secrets=tuple(Secret(name, key) for name, key in secrets.items()),
            tls_domain="example.com",
            mask_host="127.0.0.1",
            mask_port=mask,
            dc={2: ("127.0.0.1", dc)},
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Relays:
    """Two relays: ``first`` holds KEY (listed as ee and dd), ``second`` holds KEY2 (ee)."""

    first: RelayServer
    second: RelayServer

    def listed(self) -> list[Relay]:
        one, two = self.first.addresses[0][1], self.second.addresses[0][1]
        return [
            Relay("a", "127.0.0.1", one, KEY, "ee", "example.com"),
            Relay("b", "127.0.0.1", one, KEY, "dd"),
            Relay("c", "127.0.0.1", two, KEY2, "ee", "example.com"),
        ]


@asynccontextmanager
async def relays_up() -> AsyncIterator[Relays]:
    async with (
        FakeDC() as dc,
        MaskHost() as mask,
        relay_server({"main": KEY}, dc.port, mask.port) as first,
        relay_server({"second": KEY2}, dc.port, mask.port) as second,
    ):
        yield Relays(first, second)


@dataclass
class Publisher:
    dir: Path
    setup: Setup
    relays: list[Relay]
    results: list[ProbeResult]

    @property
    def store(self) -> ListStore:
        return ListStore(self.dir / "lists")

    def publish(self, results: list[ProbeResult], now: float) -> int:
        done = publish(self.store, self.relays, results, POLICY, now, key=self.setup.key,
                       log=self.setup.log)  # fmt: skip
        assert done.build.changed
        return done.build.document.version

    def checkpoint(self) -> None:
        publish_checkpoint(self.setup)


async def make_publisher(root: Path, relays: Relays) -> Publisher:
    """Three versions over the last 50 hours (first relay a; a, b and c; renewed), logged and
    checkpointed, as ``kopir run`` and ``kopir list build`` lay them out."""
    config = root / "config.toml"
    root.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[data]\ndir = "data"\n[log]\norigin = "{ORIGIN}"\n')
    setup = prepare(load_config(config))
    listed = relays.listed()
    results = await probe_relays(listed, timeout=5.0, concurrency=3)
    assert all(r.ok for r in results), results
    pub = Publisher(root / "data", setup, listed, results)
    start = time.time() - 50 * HOUR
    assert pub.publish(results[:1], start) == 1
    assert pub.publish(results, start + HOUR) == 2
    assert pub.publish(results, start + 49 * HOUR) == 3  # renewed: nearing expiry
    pub.checkpoint()
    return pub


def anchor(pub: Publisher, tmp_path: Path) -> tuple[bytes, str]:
    """The auditor's own copy of the trust root, taken before anything went wrong."""
    copy = tmp_path / "my-trust.json"
    shutil.copy(pub.dir / "trust.json", copy)
    return copy.read_bytes(), str(copy)


# -- the publisher's web app ------------------------------------------------------------------


class Served:
    """The real web app (``kopir.web``) of the publisher's config, on 127.0.0.1 in its own
    thread and loop. ``fetched`` records every path asked for; ``garbage`` makes the server
    answer one path with other bytes, as a hostile or broken server might."""

    def __init__(self, data: Path) -> None:
        self.config = load_config(data.parent / "config.toml")
        self.garbage: dict[str, bytes] = {}
        self.fetched: set[str] = set()
        self.honest: list[str] = []
        self.url = ""

    @web.middleware
    async def _tamper(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.fetched.add(request.path_qs)
        if request.path_qs in self.garbage:
            return web.Response(body=self.garbage[request.path_qs])
        response: web.StreamResponse = await handler(request)
        return response

    @contextmanager
    def running(self) -> Iterator[Served]:
        app = make_app(self.config, StatusHistory())
        app.middlewares.append(self._tamper)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="web-app", daemon=True)
        thread.start()
        started = asyncio.run_coroutine_threadsafe(serve_web(app, "127.0.0.1:0"), loop)
        runner = started.result(30)
        try:
            self.url = f"http://127.0.0.1:{bound_port(runner)}/"
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# -- running audits -------------------------------------------------------------------------


async def audit(
    source: Source, trust: tuple[bytes, str] | None, state: Path, options: Options = NO_PROBE
) -> Report:
    try:
        return await run_audit(source, trust, AuditState(state), time.time(), options)
    finally:
        await source.close()


def kinds(report: Report) -> set[tuple[str, str]]:
    return {(c.area, c.kind) for c in report.findings}


async def both(
    pub: Publisher, served: Served, trust: tuple[bytes, str] | None, state: Path,
    options: Options = NO_PROBE,
) -> tuple[Report, Report]:  # fmt: skip
    """The same audit from the directory and over HTTP (each with its own memory)."""
    by_dir = await audit(DirSource(pub.dir), trust, state / "dir", options)
    by_url = await audit(UrlSource(served.url), trust, state / "url", options)
    assert kinds(by_dir) == kinds(by_url), (by_dir.lines(), by_url.lines())
    return by_dir, by_url


# -- an honest publisher --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_honest_publisher_is_clean_by_cli_dir_and_url(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
        trust = anchor(pub, tmp_path)
        state = tmp_path / "state"
        args = ("audit", "--from", pub.dir, "--trust", trust[1], "--state", state / "cli")
        result = await asyncio.to_thread(kopir, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "versions 1-3 each meet the lists threshold (1) and chain by previous" in out
        assert "all 3 versions are proven included in the checkpoint (size 3)" in out
        assert "first audit of this log" in out and "FINDING" not in out
        assert out.count("ok       relay  127.0.0.1:") == 3
        assert out.rstrip().endswith("clean: no findings")
        with Served(pub.dir).running() as served:
            by_dir, by_url = await both(pub, served, trust, state, PROBE)
            assert by_dir.clean and by_url.clean
            # The publisher goes on: relay b is dropped (v4), the log grows, a new checkpoint.
            assert pub.publish([pub.results[0], pub.results[2]], time.time()) == 4
            pub.checkpoint()
            by_dir, by_url = await both(pub, served, trust, state, PROBE)
        again = await asyncio.to_thread(kopir, *args, "--json")
    assert by_dir.clean and by_url.clean, by_dir.lines() + by_url.lines()
    assert any("size 3 seen before, size 4 now: consistent" in c.detail for c in by_url.checks)
    report = json.loads(again.stdout)
    assert again.returncode == 0 and report["clean"] and report["findings"] == 0
    relays_checked = [c for c in report["checks"] if c["area"] == "relay"]
    assert len(relays_checked) == 2 and all(c["ok"] for c in relays_checked)


@pytest.mark.asyncio
async def test_without_trust_the_report_says_the_root_is_the_publishers_own(
    tmp_path: Path,
) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    result = await asyncio.to_thread(
        kopir, "audit", "--from", pub.dir, "--no-probe", "--state", tmp_path / "s"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "itself (not independent: pass --trust)" in result.stdout
    assert "trust.json version 1, signed by its root keys" in result.stdout


# -- what a dishonest or broken publisher looks like ----------------------------------------


@pytest.mark.asyncio
async def test_a_list_signed_by_an_unknown_key(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    # Someone else's key signs version 2 in place of the operators' key.
    _, _, stranger = signing.generate_key_pair(tmp_path / "stranger", "stranger", None)
    v2 = pub.store.version_path(2)
    for sig in v2.parent.glob("2.json.*.minisig"):
        sig.unlink()
    forged = signing.sign_list(v2.read_bytes(), stranger)
    signing.save_signature(v2.with_name(signing.signature_name(v2.name, forged)), forged)
    trust = anchor(pub, tmp_path)
    with Served(pub.dir).running() as served:
        by_dir, _ = await both(pub, served, trust, tmp_path / "state")
    assert kinds(by_dir) == {("lists", "unknown-key")}
    (bad,) = by_dir.findings
    assert bad.detail.startswith("lists/versions/2.json (version 2): threshold: ")
    assert f"{stranger.hex_id}: not a trusted key" in bad.detail
    assert "treat it as forged" in bad.advice


@pytest.mark.asyncio
async def test_a_broken_previous_chain(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    # The publisher rewrites version 2 (and signs it again): it no longer follows version 1,
    # and version 3 no longer follows it.
    v2 = pub.store.version_path(2)
    doc = signing.parse_list(v2.read_bytes())
    rewritten = replace(doc, previous=hashlib.sha256(b"another history").hexdigest()).encode()
    v2.write_bytes(rewritten)
    signature = signing.sign_list(rewritten, pub.setup.key)
    signing.save_signature(v2.with_name(signing.signature_name(v2.name, signature)), signature)
    trust = anchor(pub, tmp_path)
    with Served(pub.dir).running() as served:
        by_dir, _ = await both(pub, served, trust, tmp_path / "state")
    assert kinds(by_dir) == {("chain", "chain-broken"), ("log", "not-logged")}
    chain = [c.detail for c in by_dir.findings if c.kind == "chain-broken"]
    assert [d.split(" names")[0] for d in chain] == ["version 2", "version 3"]
    v1 = hashlib.sha256(pub.store.version_path(1).read_bytes()).hexdigest()
    assert f"but version 1 has SHA-256 {v1}" in chain[0]
    logged = [c.detail for c in by_dir.findings if c.kind == "not-logged"]
    assert logged == ["version 2 is not included in the log at checkpoint size 3"]


@pytest.mark.asyncio
async def test_a_rewritten_log_of_the_same_size_is_a_split_view(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    trust, state = anchor(pub, tmp_path), tmp_path / "state"
    with Served(pub.dir).running() as served:
        first = await both(pub, served, trust, state)
        assert all(r.clean for r in first)
        # The log key signs a second history of the same size: versions 3, 2, 1.
        forged = signing.LogStore.create(tmp_path / "forged", ORIGIN, pub.dir / "log" / "log.key")
        forged.append(pub.setup.log.entry(i) for i in (2, 1, 0))
        (pub.dir / "public" / "checkpoint").write_bytes(forged.checkpoint())
        by_dir, by_url = await both(pub, served, trust, state)
    assert ("log", "split-view") in kinds(by_dir)
    assert ("log", "not-logged") in kinds(by_dir)  # the log's proofs lead to the real root
    split = next(c for c in by_url.findings if c.kind == "split-view")
    assert "two checkpoints of size 3 with different roots" in split.detail
    evidence = list((state / "url" / "evidence").glob("checkpoint-*.note"))
    assert [p.read_bytes() for p in evidence] == [(pub.dir / "public" / "checkpoint").read_bytes()]
    # The remembered checkpoint was not replaced: the next audit still finds the split view.
    again = await audit(DirSource(pub.dir), trust, state / "dir")
    assert ("log", "split-view") in kinds(again)


@pytest.mark.asyncio
async def test_a_rewritten_and_grown_log_is_inconsistent(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    trust, state = anchor(pub, tmp_path), tmp_path / "state"
    with Served(pub.dir).running() as served:
        assert all(r.clean for r in await both(pub, served, trust, state))
        # The log is rebuilt with one extra entry slipped in before the history, then the
        # real versions: every version is included, but the log is not the one seen before.
        keys = tmp_path / "log-keys"
        keys.mkdir()
        for name in ("log.key", "log.pub"):
            shutil.copy(pub.dir / "log" / name, keys / name)
        entries = [pub.setup.log.entry(i) for i in range(3)]
        shutil.rmtree(pub.dir / "log")
        log = signing.LogStore.create(pub.dir / "log", ORIGIN, keys / "log.key")
        log.append([b"a list version nobody else saw", *entries])
        pub.setup = dataclasses.replace(pub.setup, log=log)
        pub.checkpoint()
        by_dir, by_url = await both(pub, served, trust, state)
    assert kinds(by_dir) == {("log", "inconsistent")}
    (bad,) = by_url.findings
    assert bad.detail.startswith("size 3 seen before, size 4 now, not proven an extension")
    assert "the log was rewritten" in bad.advice or "rewritten" in bad.advice


@pytest.mark.asyncio
async def test_a_listed_relay_replaced_by_a_look_alike(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
        trust = anchor(pub, tmp_path)
        # The second relay's server now holds another secret: it masks our prober to the
        # mask web server, as any look-alike that does not know the listed secret would.
        relays.second.reload([Secret("impostor", OTHER)])
        port = relays.second.addresses[0][1]
        with Served(pub.dir).running() as served:
            by_dir, by_url = await both(pub, served, trust, tmp_path / "state", PROBE)
        result = await asyncio.to_thread(
            kopir, "audit", "--from", pub.dir, "--trust", trust[1], "--state", tmp_path / "cli"
        )
    assert kinds(by_dir) == {("relay", "look-alike")}
    (bad,) = by_dir.findings
    assert bad.detail.startswith(f"127.0.0.1:{port} (ee): failed at tls-hmac")
    assert result.returncode == 1
    assert f"FINDING  relay  127.0.0.1:{port} (ee): failed at tls-hmac" in result.stdout
    assert "what to do: this server does not hold the listed secret" in result.stdout
    assert result.stderr == "kopir: audit: 1 finding(s): look-alike\n"


@pytest.mark.asyncio
async def test_missing_versions_and_replayed_list_and_checkpoint(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    trust, state = anchor(pub, tmp_path), tmp_path / "state"
    lists = pub.dir / "lists"
    old = {
        p: p.read_bytes() for p in [pub.dir / "public" / "checkpoint", *lists.glob("list.json*")]
    }
    assert pub.publish([pub.results[0]], time.time()) == 4
    pub.checkpoint()
    assert (await audit(DirSource(pub.dir), trust, state)).clean
    # Someone serves the old list (v3) and the old checkpoint (size 3), and v2 is gone.
    for path in lists.glob("list.json*"):
        path.unlink()
    for path, data in old.items():
        path.write_bytes(data)
    (lists / "versions" / "2.json").unlink()
    report = await audit(DirSource(pub.dir), trust, state)
    assert kinds(report) == {
        ("lists", "missing-version"), ("lists", "rollback"), ("log", "log-rollback"),
    }  # fmt: skip
    details = {c.kind: c.detail for c in report.findings}
    assert details["missing-version"] == "version 2 is missing from lists/versions/"
    assert (
        "list.json is version 3" in details["rollback"] and "saw version 4" in details["rollback"]
    )
    assert details["log-rollback"].startswith("size 4 seen before, size 3 now: the log went back")


@pytest.mark.asyncio
async def test_a_rotated_trust_root_must_be_signed_by_the_old_root_keys(tmp_path: Path) -> None:
    async with relays_up() as relays:
        pub = await make_publisher(tmp_path / "pub", relays)
    trust = anchor(pub, tmp_path)
    path = pub.dir / "trust.json"
    _, _, newcomer = signing.generate_key_pair(tmp_path / "k", "newcomer", None)
    root = signing.parse_trust_root(path.read_bytes())
    added = signing.TrustKey("newcomer", newcomer.public_key, frozenset({"lists"}))
    rotated = replace(root.with_key(added), version=2).encode()

    def serve(signer: signing.SecretKey) -> None:
        for old in pub.dir.glob("trust.json.*.minisig"):
            old.unlink()
        path.write_bytes(rotated)
        signature = signing.sign_trust_root(rotated, signer)
        signing.save_signature(path.with_name(signing.signature_name(path.name, signature)),
                               signature)  # fmt: skip

    with Served(pub.dir).running() as served:
        serve(pub.setup.key)  # the operators' root key signs version 2
        good, _ = await both(pub, served, trust, tmp_path / "s1")
        serve(newcomer)  # only the newcomer signs it: it cannot move the root alone
        bad, _ = await both(pub, served, trust, tmp_path / "s2")
    assert good.clean, good.lines()
    assert any("version 2" in c.detail and "follows your version 1" in c.detail
               for c in good.checks)  # fmt: skip
    assert kinds(bad) == {("trust", "trust-threshold")}, bad.lines()


# -- usage errors ---------------------------------------------------------------------------


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "trust.json"
    garbage.write_bytes(b"not a trust root")
    cases: list[tuple[tuple[str | Path, ...], str]] = [
        (("--from", tmp_path / "nowhere"), "is not a directory"),
        (("--from", "ftp://example.org/"), "only http:// and https://"),
        (("--from", tmp_path, "--trust", tmp_path / "missing.json"), "cannot read trust root"),
        (("--from", tmp_path, "--trust", garbage), "is not a kopir trust root"),
        (("--from", "http://127.0.0.1:9/", "--timeout", "2"), "cannot fetch http://127.0.0.1:9/"),
    ]
    for args, message in cases:
        result = kopir("audit", *args, "--state", tmp_path / "state")
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# -- garbage in any published file ----------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One honest publisher's data dir, built once for the fuzz tests."""
    root = tmp_path_factory.mktemp("published")

    async def build() -> Path:
        async with relays_up() as relays:
            return (await make_publisher(root, relays)).dir

    return asyncio.run(build())


def public_files(data: Path) -> list[str]:
    """Every file an auditor reads (not the keys, the lock, or the copies under public/)."""
    skip = ("keys/", "public/trust.json", "log/log.key", "log/log.pub", "lists/.lock")
    names = [str(p.relative_to(data)) for p in sorted(data.rglob("*")) if p.is_file()]
    return [n for n in names if not n.startswith(skip)]


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def mutated(original: bytes) -> st.SearchStrategy[bytes]:
    flip = st.integers(0, max(len(original) - 1, 0)).map(
        lambda i: original[:i] + bytes([original[i] ^ 0x41]) + original[i + 1 :]
        if original else b"x"
    )  # fmt: skip
    cut = st.integers(0, len(original)).map(lambda i: original[:i])
    return flip | cut


def audit_or_error(source: Source, trust: tuple[bytes, str] | None, state: Path) -> Report | None:
    """The report, or ``None`` for a clear ``AuditError``; any other exception fails the test."""
    try:
        return asyncio.run(audit(source, trust, state))
    except AuditError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@FUZZ
@given(data=st.data(), random=st.booleans(), with_trust=st.booleans())
def test_fuzz_garbage_in_a_published_file(
    published: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject,
    random: bool, with_trust: bool,
) -> None:  # fmt: skip
    work = tmp_path_factory.mktemp("fuzz")
    copy = work / "data"
    shutil.copytree(published, copy)
    name = data.draw(st.sampled_from(public_files(copy)), label="file")
    original = (copy / name).read_bytes()
    garbage = data.draw(st.binary(max_size=200) if random else mutated(original), label="bytes")
    assume(garbage != original)
    (copy / name).write_bytes(garbage)
    trust = ((published / "trust.json").read_bytes(), "mine") if with_trust else None
    report = audit_or_error(DirSource(copy), trust, work / "state")
    if random and report is not None:
        # Wholly different bytes are always caught (a flipped byte in a signature's
        # untrusted comment, say, rightly is not).
        assert not report.clean, (name, garbage, report.lines())


@pytest.fixture(scope="module")
def served(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The published dir over HTTP, after one clean audit has recorded the paths it reads."""
    with Served(published).running() as server:
        report = audit_or_error(UrlSource(server.url), None, tmp_path_factory.mktemp("s"))
        assert report is not None and report.clean, report and report.lines()
        server.honest = sorted(server.fetched)
        yield server


@FUZZ
@given(data=st.data())
def test_fuzz_garbage_in_a_fetched_route(
    served: Served, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(served.honest), label="path")
    served.garbage = {path: data.draw(st.binary(max_size=200), label="body")}
    try:
        report = audit_or_error(UrlSource(served.url), None, tmp_path_factory.mktemp("s"))
    finally:
        served.garbage = {}
    assert report is None or not report.clean, (path, report.lines())
