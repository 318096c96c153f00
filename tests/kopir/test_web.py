"""The web app over real HTTP on 127.0.0.1: every public route against a data directory made
here with the real signing, list and log code; log proofs checked with ``signing.tlog``;
operator routes refused without the token and with a wrong one; login, sessions and the
failed-login limit; security headers on every response.

The helpers (a data directory, a server in a thread, a raw HTTP client) are shared with
``test_web_fuzz.py`` and ``test_status_page.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import signing
from kopir.config import Config, load_config
from kopir.listcmd import list_policy, publisher_relays
from kopir.web import StatusHistory, WebError, WebSources, bound_port, make_app, serve_web
from kopir.web.auth import LoginLimiter, Sessions, resolve_token, token_matches
from proxylist import STAGES, ListStore, PortResult, ProbeResult, Relay, StageResult, publish
from signing import tlog
from signing.canonical import rfc3339
from signing.fileio import write_atomic

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

    def _call(self, coro):  # type: ignore[no-untyped-def]
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


# -- public files ---------------------------------------------------------------------------


def test_home_explains_kopir_in_three_languages(served: Served) -> None:
    reply = served.get("/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    for lang, words in (("kk", "Сілтемені тексеру"), ("ru", "Проверить ссылку"), ("en", "SMS")):
        assert f'<section lang="{lang}">' in reply.text and words in reply.text
    assert 'href="/verify"' in reply.text and 'href="/style.css"' in reply.text
    assert "<script" not in reply.text and "style=" not in reply.text
    check_headers(reply)
    style = served.get("/style.css")
    assert style.status == 200 and style.headers["Content-Type"].startswith("text/css")


def test_trust_root_and_its_signature_verify(site: DataSite, served: Served) -> None:
    trust = served.get("/trust.json")
    assert trust.status == 200 and trust.headers["Content-Type"].startswith("application/json")
    kid = site.key.hex_id
    sig = served.get(f"/trust.json.{kid}.minisig")
    assert sig.status == 200
    root = signing.parse_trust_root(trust.body)
    signing.verify(site.key.public_key, signing.parse_signature(sig.text), trust.body)
    assert root.link_keys  # the publisher's key is named for links
    check_headers(sig)


def test_every_list_version_and_its_signature_verify(site: DataSite, served: Served) -> None:
    kid = site.key.hex_id
    current = served.get("/list.json")
    assert current.body == site.versions[-1]
    for number, expected in enumerate(site.versions, 1):
        doc = served.get(f"/lists/versions/{number}.json")
        assert doc.status == 200 and doc.body == expected
        assert signing.parse_list(doc.body).version == number
        sig = served.get(f"/lists/versions/{number}.json.{kid}.minisig")
        assert sig.status == 200
        signing.verify(site.key.public_key, signing.parse_signature(sig.text), doc.body)
    sig = served.get(f"/list.json.{kid}.minisig")
    signing.verify(site.key.public_key, signing.parse_signature(sig.text), current.body)
    previous = signing.parse_list(served.get("/lists/versions/2.json").body).previous
    assert previous == hashlib.sha256(site.versions[0]).hexdigest()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/lists/versions/9.json", "no list version 9"),
        ("/lists/versions/01.json", "names are <N>.json"),
        ("/lists/versions/..%2Flist.json", "names are <N>.json"),
        ("/lists/versions/1.json.0000.minisig", "no signature"),
        ("/trust.json.bad.minisig", "signatures are trust.json.<KEYID>.minisig"),
        ("/list.json.ABC.minisig.x", "signatures are list.json.<KEYID>.minisig"),
        ("/log/entries/3", "no entry 3: the log has 3 entries"),
        ("/log/entries/-1", "index must be a whole number"),
        ("/nowhere", "no such page here"),
    ],
)
def test_missing_or_malformed_files_are_404_or_400_with_a_reason(
    served: Served, path: str, words: str
) -> None:
    reply = served.get(path)
    check_refusal(reply)
    assert words in reply.text
    check_headers(reply)


def test_log_checkpoint_is_signed_by_the_log_key_and_entries_match(
    site: DataSite, served: Served
) -> None:
    reply = served.get("/log/checkpoint")
    assert reply.status == 200
    public = site.log.public_key()
    note = signing.note.verify_note(reply.body, site.config.log.origin, public.key)
    checkpoint = signing.note.parse_checkpoint(note.text)
    assert checkpoint.size == 3
    for index, version in enumerate(site.versions):
        assert served.get(f"/log/entries/{index}").body == version
    assert checkpoint.root == tlog.root_hash([tlog.leaf_hash(v) for v in site.versions])


def _hashes(values: object) -> list[bytes]:
    assert isinstance(values, list)
    return [base64.b64decode(v) for v in values]


def test_inclusion_proofs_verify_against_the_checkpoint_root(
    site: DataSite, served: Served
) -> None:
    checkpoint = signing.note.parse_checkpoint(
        signing.note.parse_note(served.get("/log/checkpoint").body).text
    )
    for size in (1, 2, 3):
        for index in range(size):
            proof = served.get(f"/log/proof/inclusion?index={index}&size={size}").json()
            leaf = tlog.leaf_hash(site.versions[index])
            assert base64.b64decode(str(proof["leaf_hash"])) == leaf
            root = base64.b64decode(str(proof["root"]))
            tlog.verify_inclusion(leaf, index, size, _hashes(proof["hashes"]), root)
            if size == checkpoint.size:
                assert root == checkpoint.root
    text = served.get("/log/proof/inclusion?index=1&format=text")
    assert tlog.parse_inclusion_proof(text.body).size == 3  # size defaults to the log's


def test_consistency_proofs_verify_and_tampering_is_caught(served: Served) -> None:
    for old in (1, 2, 3):
        proof = served.get(f"/log/proof/consistency?old={old}&new=3").json()
        old_root = base64.b64decode(str(proof["old_root"]))
        new_root = base64.b64decode(str(proof["new_root"]))
        tlog.verify_consistency(old, 3, old_root, new_root, _hashes(proof["hashes"]))
    proof = served.get("/log/proof/consistency?old=1").json()
    with pytest.raises(signing.VerificationError):
        tlog.verify_consistency(1, 3, bytes(32), base64.b64decode(str(proof["new_root"])),
                                _hashes(proof["hashes"]))  # fmt: skip
    text = served.get("/log/proof/consistency?old=2&new=3&format=text")
    assert tlog.parse_consistency_proof(text.body).old_size == 2


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("inclusion", "give index=N"),
        ("inclusion?index=3", "index must be below size (3)"),
        ("inclusion?index=0&size=4", "size must be 1-3"),
        ("inclusion?index=0&size=0", "size must be 1-3"),
        ("inclusion?index=00", "index must be a whole number"),
        ("inclusion?index=1e3", "index must be a whole number"),
        ("inclusion?index=0&index=1", "given twice"),
        ("inclusion?index=0&format=xml", "format must be json or text"),
        ("consistency?old=0", "old must be 1-3"),
        ("consistency?old=3&new=2", "old must be 1-2"),
        ("consistency?new=3", "give old=N"),
        ("consistency?old=99999999999999999999", "old must be a whole number"),
    ],
)
def test_bad_proof_requests_are_400_with_a_reason(served: Served, query: str, words: str) -> None:
    reply = served.get(f"/log/proof/{query}")
    assert reply.status == 400, reply.text
    assert words in reply.text


def test_before_anything_is_published_files_are_404_saying_why(tmp_path: Path) -> None:
    server = Served(write_config(tmp_path))
    try:
        for path, words in (
            ("/trust.json", "no trust root yet"),
            ("/list.json", "no list yet"),
            ("/lists/versions/1.json", "no list version 1"),
            ("/log/checkpoint", "no signed checkpoint yet"),
            ("/log/entries/0", "no transparency log yet"),
            ("/log/proof/inclusion?index=0", "no transparency log yet"),
        ):
            reply = server.get(path)
            assert reply.status == 404 and words in reply.text, (path, reply.text)
        assert server.get("/verify").status in (404, 503)
    finally:
        server.close()


# -- operator routes ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_operator_routes_refuse_without_or_with_a_wrong_token(served: Served, path: str) -> None:
    served.clock.now += 3600  # a fresh failed-login window
    missing = served.get(path)
    assert missing.status == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
    assert "log in" in missing.text
    wrong = served.get(path, {"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status == 401 and "wrong token" in wrong.text
    basic = served.get(path, {"Authorization": "Basic b3BlcmF0b3I6eA=="})
    assert basic.status == 401
    cookie = served.get(path, {"Cookie": "kopir_session=forged"})
    assert cookie.status == 401
    for reply in (missing, wrong, basic, cookie):
        check_headers(reply)
        assert reply.headers["Cache-Control"] == "no-store"
        assert "kopir_relay_up" not in reply.text and "chart-relays" not in reply.text
    good = served.operator(path)
    assert good.status == 200 and good.headers["Cache-Control"] == "no-store"
    check_headers(good)


def test_metrics_are_prometheus_text(site: DataSite, served: Served) -> None:
    reply = served.operator("/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = reply.text.splitlines()
    assert "kopir_list_version 3" in lines and "kopir_log_entries 3" in lines
    assert "kopir_list_relays 3" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_login_form_sets_a_strict_httponly_cookie_and_logout_ends_it(served: Served) -> None:
    served.clock.now += 3600
    form = served.get("/login")
    assert form.status == 200 and 'type="password"' in form.text
    reply = served.login()
    assert reply.status == 303 and reply.headers["Location"] == "/status"
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = cookie.split(";", 1)[0]
    page = served.get("/status", {"Cookie": session})
    assert page.status == 200 and "<svg" in page.text
    out = served.request("POST", "/logout", {"Cookie": session}, b"")
    assert out.status == 303
    assert served.get("/status", {"Cookie": session}).status == 401


def test_sessions_expire(site: DataSite) -> None:
    server = Served(site.config)
    try:
        session = server.login().headers["Set-Cookie"].split(";", 1)[0]
        assert server.get("/metrics", {"Cookie": session}).status == 200
        server.clock.now += site.config.web.session + 1
        assert server.get("/metrics", {"Cookie": session}).status == 401
    finally:
        server.close()


def test_failed_logins_are_rate_limited_per_client(site: DataSite) -> None:
    server = Served(site.config)
    try:
        for _ in range(5):
            assert server.login("wrong-token-0123456789").status == 401
        limited = server.login()  # even the right token waits: a guesser learns nothing
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
        assert "too many wrong tokens" in limited.text
        assert server.operator("/metrics").status == 429
        server.clock.now += 61
        assert server.login().status == 303
        assert server.operator("/metrics").status == 200
    finally:
        server.close()


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site", "Origin": "null"}],
)
def test_cross_site_login_is_refused(served: Served, headers: dict[str, str]) -> None:
    reply = served.login(headers=headers)
    assert reply.status == 403 and "another site" in reply.text


def test_no_token_configured_means_operator_routes_are_off(tmp_path: Path) -> None:
    off = Served(write_config(tmp_path), environ={})
    try:
        for path in ("/status", "/metrics"):
            reply = off.operator(path)
            assert reply.status == 403 and "set [web] token" in reply.text
        assert off.login().status == 403
    finally:
        off.close()


@pytest.mark.parametrize(
    ("web", "words"),
    [
        ('token = "short"\n', "16-512 printable characters"),
        ('listen = "8080"\n', "[web] listen must be"),
        ('listen = "[::1]:99999"\n', "[web] listen must be"),
    ],
)
def test_bad_web_config_is_one_clear_error(tmp_path: Path, web: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[web]\n{web}", encoding="utf-8")
    with pytest.raises(WebError) as info:
        make_app(load_config(path), StatusHistory())
    assert words in str(info.value)


def test_listening_on_a_busy_port_is_a_web_error(site: DataSite, served: Served) -> None:
    async def attempt() -> None:
        app = make_app(site.config, StatusHistory())
        await serve_web(app, f"127.0.0.1:{served.port}")

    with pytest.raises(WebError, match="cannot listen there"):
        asyncio.run(attempt())


# -- posters --------------------------------------------------------------------------------


def test_public_poster_batch_has_signed_links_that_verify(site: DataSite, served: Served) -> None:
    reply = served.get("/poster?batch=lobby&count=2")
    assert reply.status == 200, reply.text
    check_headers(reply)
    policy = reply.headers["Content-Security-Policy"]
    assert "style-src 'self' 'sha256-" in policy
    trust = signing.parse_trust_root(served.get("/trust.json").body)
    links = sorted(set(_poster_links(reply.text)))
    assert len(links) == 2
    listed = {p["server"] for p in signing.parse_list(site.versions[-1]).proxies}
    for text in links:
        assert signing.verify_link(text, trust, NOW).server in listed
    again = served.get("/poster?batch=lobby&count=2")  # the ring gives a batch the same relays
    assert {signing.parse_link(t).server for t in _poster_links(again.text)} == {
        signing.parse_link(t).server for t in links
    }


def _poster_links(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'href="(tg://proxy\?[^"]+)"', page)]


def test_private_poster_batches_need_the_operator(served: Served) -> None:
    served.clock.now += 3600
    refused = served.get("/poster?batch=kitchen")
    assert refused.status == 403 and "not public" in refused.text
    assert "<html" in refused.text  # a page, for a browser
    allowed = served.operator("/poster?batch=kitchen&count=1")
    assert allowed.status == 200 and "tg://proxy" in allowed.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("batch=../x", "batch must be"),
        ("batch=lobby&count=0", "count must be 1-60"),
        ("batch=lobby&count=61", "count must be 1-60"),
        ("batch=lobby&count=x", "count must be a whole number"),
        ("batch=lobby&pool=old", "pool must be established or new"),
    ],
)
def test_bad_poster_requests_are_400(served: Served, query: str, words: str) -> None:
    reply = served.get(f"/poster?{query}")
    assert reply.status == 400 and words in reply.text


def test_poster_index_lists_public_batches(served: Served) -> None:
    reply = served.get("/poster")
    assert reply.status == 200 and 'href="/poster?batch=lobby"' in reply.text


def test_poster_without_a_signing_key_is_a_clear_503(tmp_path: Path) -> None:
    site = make_data(tmp_path)
    site.config.in_data(site.config.signing.key).unlink()
    server = Served(site.config)
    try:
        reply = server.get("/poster?batch=lobby")
        assert reply.status == 503 and "no online signing key" in reply.text
        assert "<html" in reply.text
        check_headers(reply)
    finally:
        server.close()


# -- the verifier ---------------------------------------------------------------------------


def test_verify_serves_the_offline_verifier_with_its_inline_code_hashed(served: Served) -> None:
    reply = served.get("/verify")
    check_headers(reply)
    if reply.status == 503:
        assert "not built" in reply.text
        pytest.fail("kopir.verifier.render_verifier has not landed yet")
    assert reply.status == 200
    policy = reply.headers["Content-Security-Policy"]
    if "<script" in reply.text:
        assert "script-src 'sha256-" in policy
    assert "connect-src" not in policy  # the verifier may fetch nothing


# -- the auth core, without HTTP ------------------------------------------------------------


def test_sessions_table_is_bounded_and_keeps_the_newest() -> None:
    sessions = Sessions(lifetime=60, limit=3)
    ids = [sessions.create(NOW) for _ in range(5)]
    assert [sessions.valid(i, NOW) for i in ids] == [False, False, True, True, True]
    assert len(sessions) == 3 and not sessions.valid(ids[-1], NOW + 60)


def test_login_limiter_window_slides_per_client() -> None:
    limiter = LoginLimiter(failures=2, window=10)
    limiter.failed("a", NOW)
    limiter.failed("a", NOW + 5)
    assert limiter.wait("a", NOW + 6) == pytest.approx(4)
    assert limiter.wait("b", NOW + 6) == 0  # another client is not held up
    assert limiter.wait("a", NOW + 10) == 0  # the first failure aged out


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("", {}, None),
        ("env:T", {}, None),
        ("env:T", {"T": ""}, None),
        ("env:T", {"T": TOKEN}, TOKEN),
        (TOKEN, {}, TOKEN),
    ],
)
def test_token_from_config_or_environment(
    value: str, environ: dict[str, str], expected: str | None
) -> None:
    assert resolve_token(value, environ) == expected
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1], TOKEN)
