"""Shared by the web tests: a data directory, serve_web in a thread, an HTTP client, fixtures."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import signing
from kopir.config import Config, load_config
from kopir.listcmd import list_policy, publisher_relays
from kopir.web import StatusHistory, WebSources, bound_port, make_app, serve_web
from proxylist import STAGES, ListStore, PortResult, ProbeResult, Relay, StageResult, publish
from signing.canonical import rfc3339
from signing.fileio import write_atomic

T = TypeVar("T")

TOKEN = "operator-token-0123456789abcdef"
TOKEN_ENV = "KOPIR_TEST_WEB_TOKEN"
NOW = time.time()
RELAYS_TOML = """
[[publisher.relays]]
name = "almaty"
server = "relay1.example.org"
port = 443
key = "000102030405060708090a0b0c0d0e0f"
mode = "ee"
domain = "example.com"

[[publisher.relays]]
name = "berlin"
server = "relay2.example.org"
port = 8443
key = "101112131415161718191a1b1c1d1e1f"
mode = "dd"

[[publisher.relays]]
name = "oslo"
server = "10.0.0.3"
port = 443
key = "07070707070707070707070707070707"
mode = "classic"
"""


# -- a data directory, made with the real code ----------------------------------------------


@dataclass
class DataSite:
    config: Config
    key: signing.SecretKey
    log: signing.LogStore
    relays: tuple[Relay, ...]
    versions: list[bytes] = field(default_factory=list)


def probe(relay: Relay, ok: bool, at: float) -> ProbeResult:
    stages = tuple(StageResult(s, ok or s != "connect", "" if ok else "refused") for s in STAGES)
    if not ok:
        stages = stages[:1]
    return ProbeResult(relay, (PortResult(relay.port, stages, 12.0 if ok else None),), at)


def write_config(tmp_path: Path, web: str = "", extra: str = "") -> Config:
    text = (
        '[data]\ndir = "data"\n[publisher]\nname = "kopir.test"\nlocal_relay = ""\n'
        f'[log]\norigin = "kopir.test/log"\n{extra}{RELAYS_TOML}\n'
        f'[web]\nlisten = "127.0.0.1:0"\ntoken = "env:{TOKEN_ENV}"\n{web}'
    )
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def make_data(
    tmp_path: Path, web: str = 'poster_batches = ["lobby"]\n', lists: int = 3
) -> DataSite:
    """Keys, a signed trust root, ``lists`` signed and logged list versions, a checkpoint."""
    config = write_config(tmp_path, web)
    data = config.data_dir
    _, _, key = signing.generate_key_pair(data / "keys", "publisher", None)
    log = signing.LogStore.create(config.in_data(config.log.dir), config.log.origin)
    _trust_root(config.in_data(config.signing.trust), key, log)
    relays = publisher_relays(config)
    site = DataSite(config, key, log, relays)
    store = ListStore(config.in_data(config.publisher.dir))
    for round_ in range(lists):
        up = [probe(r, not (round_ % 2 and r.name == "berlin"), NOW) for r in relays]
        published = publish(store, relays, up, list_policy(config), NOW + round_, key=key, log=log)
        site.versions.append(published.path.read_bytes())
    (data / "public").mkdir()
    write_atomic(data / "public" / "checkpoint", log.checkpoint())
    return site


def _trust_root(path: Path, key: signing.SecretKey, log: signing.LogStore) -> None:
    keys = (
        signing.TrustKey("publisher", key.public_key, frozenset({"root", "lists", "links"})),
        signing.TrustKey("log", log.public_key(), frozenset({"log"})),
    )
    threshold = {"root": 1, "lists": 1, "links": 1, "log": 1}
    data = signing.TrustRoot(1, rfc3339(NOW + 365 * 86400), keys, threshold).encode()
    write_atomic(path, data)
    sig = signing.sign_trust_root(data, key)
    signing.save_signature(path.with_name(signing.signature_name(path.name, sig)), sig)


# -- a server in a thread, and a raw HTTP client ---------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Served:
    """``serve_web`` on 127.0.0.1:0 in its own thread and event loop."""

    def __init__(
        self,
        config: Config,
        history: StatusHistory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.history = history or StatusHistory()
        self.clock = Clock()
        environ = {TOKEN_ENV: TOKEN} if environ is None else environ
        sources = WebSources(environ=environ, clock=self.clock)
        self.app = make_app(config, self.history, sources=sources)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = self._call(serve_web(self.app, config.web.listen))
        self.port = bound_port(self.runner)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers)

    def operator(self, path: str) -> Reply:
        return self.get(path, {"Authorization": f"Bearer {TOKEN}"})

    def login(self, token: str = TOKEN, headers: Mapping[str, str] | None = None) -> Reply:
        form = f"token={token}".encode()
        kind = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self.request("POST", "/login", kind, form)


def check_headers(reply: Reply) -> None:
    """The headers every response must carry."""
    policy = reply.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'"), policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "http" not in policy  # no third-party origin is ever allowed
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert reply.headers["X-Frame-Options"] == "DENY"


def check_refusal(reply: Reply) -> None:
    """A 4xx answer with a reason a person can read."""
    assert 400 <= reply.status < 500, (reply.status, reply.text[:300])
    assert len(reply.text.strip()) > 20, reply.text


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> DataSite:
    return make_data(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def served(site: DataSite) -> Iterator[Served]:
    server = Served(site.config)
    yield server
    server.close()
