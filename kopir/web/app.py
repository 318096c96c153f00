"""The aiohttp web app of ``kopir run``: public files, the verifier, posters, operator pages.

Theory of operation
-------------------
:func:`make_app` wires the routes to one :class:`Site`, which holds the config, the status
history the runner feeds, the login sessions and the failed-login limiter. Handlers are thin:
they parse the request, call the pure parts (``public``, ``pages``, ``statuspage``, ``auth``)
or run file and SQLite work in a thread, and wrap the result in a response. :func:`serve_web`
binds it to ``[web] listen`` (loopback unless the operator says otherwise).

Public routes (GET; HEAD too)::

    /  /style.css  /verify  /poster[?batch=NAME]
    /trust.json[.<KEYID>.minisig]  /list.json[.<KEYID>.minisig]
    /lists/versions/<N>.json[.<KEYID>.minisig]
    /log/checkpoint  /log/entries/<N>  /log/proof/inclusion  /log/proof/consistency

Operator routes: ``/status`` and ``/metrics`` need ``Authorization: Bearer <token>`` or the
session cookie ``POST /login`` sets (``POST /logout`` ends it); see ``kopir.web.auth``. With
no token configured they answer 403. A poster batch not named in ``[web] poster_batches`` is
an operator route too: each batch reveals its own relays, so strangers must not try names.
Only the operator may choose a poster's ``count`` and ``pool`` (``&count=N&pool=new``):
``count`` is how many relays the distribution ring hands the batch, so a stranger who could
ask for 60 links, then for the other pool, would get every relay of the fleet. A stranger's
poster is made once and served again (``kopir.web.postercache``: until the list changes or
half the link expiry has passed), so asking in a loop signs nothing and writes nothing; the
operator's is made anew each time.

Every request passes through ``kopir.web.guard``: bad input is answered 4xx with the reason
in the body (plain text, or an HTML page for the pages people open in a browser), a bug is a
logged 500 that names nothing internal, and every response carries the security headers
(a CSP of ``default-src 'none'`` and the rest; see there). There is no access log: the SMS
webhooks the runner mounts here carry phone numbers in their query strings, and client
addresses are not ours to keep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import signing
from kopir.config import Config, ConfigError
from kopir.output import CommandFailed
from kopir.web import auth, charts, pages, public, statuspage
from kopir.web.guard import (
    ASK,
    MAX_BODY,
    Refused,
    csp,
    form_field,
    guard,
    html,
    inline_hashes,
    on_prepare,
    query,
    same_origin,
)
from kopir.web.postercache import PosterCache, list_digest
from kopir.web.status import StatusHistory
from proxylist import ProxylistError, poster
from smsgw.webhooks import ServerLog

log = logging.getLogger("kopir.web")

COOKIE = "kopir_session"
MAX_POSTER_LINKS = 60
POSTER_LINKS = 6
POSTER_MAX_AGE = 300
"""Seconds a browser or proxy may keep a public poster: short, so a new list shows soon."""
POOLS = ("established", "new")
_PORT = re.compile(r"[0-9]{1,5}")
BATCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class WebError(Exception):
    """The ``[web]`` config cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class PublicPoster:
    """A public poster's response, ready to send again as it is."""

    body: bytes
    policy: str
    """Its Content-Security-Policy (with the hashes of its inline blocks)."""


@dataclass(frozen=True)
class WebSources:
    """What the runner hands the web app besides the config and the history."""

    relay_metrics: Callable[[], str] | None = None
    """The running relay's Prometheus text (``relay.Metrics.render``), appended to /metrics."""
    key: signing.SecretKey | None = None
    """The online signing key for posters; without it, ``[signing] key`` is read on first use
    (an encrypted one only with KOPIR_KEY_PASSPHRASE set: a server never prompts)."""
    clock: Callable[[], float] = time.time
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    """Where ``env:NAME`` in ``[web] token`` is looked up."""


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into (host, port); ``WebError`` for anything else.

    The port is 1-65535 in ASCII digits, or 0 for "any free port" (tests and one-off runs read
    the real one back with :func:`bound_port`). The host is checked only for what cannot be a
    host at all (nothing, spaces, control characters, stray brackets); whether it can be
    bound to is the socket's to say."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if (
        not sep
        or not host
        or not host.isprintable()
        or any(c.isspace() or c in "[]" for c in host)
        or not _PORT.fullmatch(port)
        or int(port) > 65535
    ):
        raise WebError(
            f'[web] listen must be "host:port" (IPv6 as "[::1]:8080"), the port 1-65535 '
            f"in digits 0-9 (or 0: any free port), got {text!r}"
        )
    return host, int(port)


def file_response(found: public.File) -> web.Response:
    kind, _, params = found.content_type.partition(";")
    charset = params.partition("=")[2] or None
    return web.Response(body=found.data, content_type=kind, charset=charset)


def _env_passphrase() -> bytes:
    value = os.environ.get(signing.PASSPHRASE_ENV)
    if not value:
        raise signing.KeyFileError(
            f"the signing key is encrypted and {signing.PASSPHRASE_ENV} is not set"
        )
    return value.encode("utf-8")


class Site:
    """The handlers and the state they share."""

    def __init__(self, config: Config, history: StatusHistory, sources: WebSources) -> None:
        self.config, self.history, self.sources = config, history, sources
        self.data = public.DataDir(config)
        try:
            self.token = auth.resolve_token(config.web.token, sources.environ)
        except auth.AuthError as exc:
            raise WebError(str(exc)) from None
        self.sessions = auth.Sessions(config.web.session)
        self.limiter = auth.LoginLimiter()
        self.secure_cookie = config.web.public_url.startswith("https://")
        self._key = sources.key
        expiry = config.signing.link_expiry
        self.posters: PosterCache[PublicPoster] = PosterCache(config.web.poster_batches, expiry / 2)
        self.poster_max_age = min(POSTER_MAX_AGE, int(expiry / 2))

    def now(self) -> float:
        return self.sources.clock()

    # -- authentication ------------------------------------------------------------------

    def client(self, request: web.Request) -> str:
        return request.remote or "unknown"

    def authorize(self, request: web.Request) -> None:
        """Return when the request is the operator's; raise ``Refused`` otherwise."""
        if self.token is None:
            raise Refused(403, "operator pages are off: set [web] token (see config.example.toml)")
        now, client = self.now(), self.client(request)
        self._check_limit(client, now)
        header = request.headers.get("Authorization")
        if header is not None:
            given = auth.bearer(header)
            if given is not None and auth.token_matches(given, self.token):
                return
            self.limiter.failed(client, now)
            raise Refused(401, "wrong token: send Authorization: Bearer <the [web] token>", ASK)
        session = request.cookies.get(COOKIE)
        if session and self.sessions.valid(session, now):
            return
        raise Refused(401, "log in first, or send Authorization: Bearer <token>", ASK, login=True)

    def _check_limit(self, client: str, now: float) -> None:
        wait = self.limiter.wait(client, now)
        if wait > 0:
            seconds = math.ceil(wait)
            raise Refused(
                429,
                f"too many wrong tokens; try again in {seconds} s",
                {"Retry-After": str(seconds)},
            )

    def is_operator(self, request: web.Request) -> bool:
        try:
            self.authorize(request)
        except Refused:
            return False
        return True

    # -- pages ---------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        return html(pages.home())

    async def stylesheet(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=pages.STYLESHEET, content_type="text/css", charset="utf-8")

    async def favicon(self, request: web.Request) -> web.StreamResponse:
        """Nothing, on purpose: browsers ask for it, and a 404 would fill their consoles."""
        return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        return html(pages.login())

    async def login(self, request: web.Request) -> web.StreamResponse:
        if self.token is None:
            raise Refused(403, "operator pages are off: set [web] token (see config.example.toml)")
        same_origin(request)
        now, client = self.now(), self.client(request)
        self._check_limit(client, now)
        given = await form_field(request, "token")
        if not auth.token_matches(given, self.token):
            self.limiter.failed(client, now)
            return html(pages.login("Wrong token. Try again."), status=401)
        response = web.Response(status=303, headers={"Location": "/status"})
        response.set_cookie(
            COOKIE, self.sessions.create(now), max_age=int(self.config.web.session),
            path="/", httponly=True, samesite="Strict",
            secure=self.secure_cookie or request.secure,
        )  # fmt: skip
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        same_origin(request)
        session = request.cookies.get(COOKIE)
        if session:
            self.sessions.end(session)
        response = web.Response(status=303, headers={"Location": "/"})
        response.del_cookie(COOKIE, path="/")
        return response

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.authorize(request)
        published = await asyncio.to_thread(self._published)
        response = html(statuspage.render(self.history, published, self.now()))
        response.headers["Cache-Control"] = "no-store"
        return response

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        self.authorize(request)
        published = await asyncio.to_thread(self._published)
        relay = self.sources.relay_metrics() if self.sources.relay_metrics else ""
        text = statuspage.metrics(self.history, published, relay)
        response = web.Response(text=text, content_type="text/plain", charset="utf-8")
        response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _published(self) -> statuspage.Published:
        doc = self.data.list_summary()
        return statuspage.Published(
            list_version=doc.version if doc else None,
            list_expires=doc.expires if doc else "",
            list_relays=len(doc.proxies) if doc else 0,
            list_signers=self.data.list_signers(),
            log_size=self.data.log_size(),
        )

    # -- public files --------------------------------------------------------------------

    async def trust(self, request: web.Request) -> web.StreamResponse:
        suffix = request.match_info.get("suffix", "")
        return file_response(await asyncio.to_thread(self.data.trust_file, suffix))

    async def current_list(self, request: web.Request) -> web.StreamResponse:
        suffix = request.match_info.get("suffix", "")
        return file_response(await asyncio.to_thread(self.data.list_file, suffix))

    async def version(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        return file_response(await asyncio.to_thread(self.data.version_file, name))

    async def checkpoint(self, request: web.Request) -> web.StreamResponse:
        return file_response(await asyncio.to_thread(self.data.checkpoint))

    async def entry(self, request: web.Request) -> web.StreamResponse:
        index = request.match_info["index"]
        return file_response(await asyncio.to_thread(self.data.entry, index))

    async def inclusion(self, request: web.Request) -> web.StreamResponse:
        return await self._proof(request, public.inclusion)

    async def consistency(self, request: web.Request) -> web.StreamResponse:
        return await self._proof(request, public.consistency)

    async def _proof(
        self, request: web.Request, make: Callable[[signing.LogStore, Mapping[str, str]], Any]
    ) -> web.StreamResponse:
        params = query(request)

        def work() -> public.File:
            return public.proof_body(make(self.data.log(), params), params)

        return file_response(await asyncio.to_thread(work))

    # -- the verifier and posters --------------------------------------------------------

    async def verify(self, request: web.Request) -> web.StreamResponse:
        trust = await asyncio.to_thread(self.data.trust_file)
        try:
            from kopir.verifier import (  # type: ignore[import-not-found,unused-ignore]
                VerifierError,
                render_verifier,
            )
        except ImportError:
            raise Refused(503, "the offline verifier is not built into this kopir yet") from None
        try:
            page = render_verifier(trust.data, charts.clock(self.now()))
        except VerifierError as exc:
            log.warning("the verifier page cannot be built: %s", exc)
            raise Refused(503, "the trust root here cannot be put into the verifier") from None
        return html(page, inline=True)

    async def poster(self, request: web.Request) -> web.StreamResponse:
        params = query(request)
        public_batches = self.config.web.poster_batches
        batch = params.get("batch")
        if batch is None:
            return html(pages.poster_index(public_batches))
        if not BATCH.fullmatch(batch):
            raise Refused(400, "batch must be 1-64 letters, digits, '.', '_' or '-'")
        links = public.count(params, "count", POSTER_LINKS)
        if not 1 <= links <= MAX_POSTER_LINKS:
            raise Refused(400, f"count must be 1-{MAX_POSTER_LINKS}, got {links}")
        pool = params.get("pool", POOLS[0])
        if pool not in POOLS:
            raise Refused(400, "pool must be established or new")
        operator = self.is_operator(request)
        if batch not in public_batches and not operator:
            raise Refused(403, f"poster batch {batch!r} is not public; the operator can print it")
        if not operator and (links, pool) != (POSTER_LINKS, POOLS[0]):
            # count is the k of the batch's share of the ring: a stranger asking for 60, then
            # for the other pool, would read every relay of the fleet.
            raise Refused(
                403,
                "only the operator may choose count and pool; a public poster has "
                f"{POSTER_LINKS} links from the {POOLS[0]} pool (/poster?batch={batch})",
            )
        if not operator:
            return await self._public_poster(batch)
        page = await self._poster_page(batch, links, pool, operator, self.now())
        return html(page, inline=True)

    async def _public_poster(self, batch: str) -> web.StreamResponse:
        """The kept default poster of a public batch (made again as ``postercache`` says)."""

        async def make(now: float) -> PublicPoster:
            page = await self._poster_page(batch, POSTER_LINKS, POOLS[0], False, now)
            return PublicPoster(page.encode("utf-8"), csp(inline_hashes(page)))

        async def listed() -> str | None:
            try:
                return await asyncio.to_thread(list_digest, self.data.lists.path)
            except OSError as exc:
                log.warning("poster %s: cannot read the list: %s", batch, exc)
                why = "no poster can be made here now (the operator's log says why)"
                raise Refused(503, why) from None

        kept = await self.posters.page(batch, self.now(), listed, make)
        response = web.Response(body=kept.body, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = kept.policy
        response.headers["Cache-Control"] = f"public, max-age={self.poster_max_age}"
        return response

    async def _poster_page(
        self, batch: str, links: int, pool: str, operator: bool, now: float
    ) -> str:
        key = await self._signing_key()
        expires = now + self.config.signing.link_expiry

        def work() -> str:
            from kopir.qrcmd import poster_links

            texts = poster_links(self.config, batch, links, pool)
            entries = poster.signed_entries(texts, key, expires, "tg")
            return poster.render_html(entries, batch)

        try:
            return await asyncio.to_thread(work)
        except (CommandFailed, ConfigError, ProxylistError, signing.SigningError, OSError) as exc:
            log.warning("poster %s cannot be made: %s", batch, exc)
            why = str(exc) if operator else "the operator's log says why"
            raise Refused(503, f"no poster can be made here now ({why})") from None

    async def _signing_key(self) -> signing.SecretKey:
        if self._key is not None:
            return self._key
        path = self.config.in_data(self.config.signing.key)
        if not path.exists():
            raise Refused(503, "this server has no online signing key, so it cannot sign posters")
        try:
            self._key = await asyncio.to_thread(signing.load_secret_key, path, _env_passphrase)
        except signing.SigningError as exc:
            log.warning("cannot load the signing key for posters: %s", exc)
            raise Refused(503, "the online signing key cannot be used; see the log") from None
        return self._key


# -- the app ----------------------------------------------------------------------------------


def make_app(
    config: Config, history: StatusHistory, *, sources: WebSources | None = None
) -> web.Application:
    """The web app for ``config``; ``WebError`` if ``[web]`` cannot be used."""
    parse_listen(config.web.listen)
    site = Site(config, history, sources or WebSources())
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app.on_response_prepare.append(on_prepare)
    get = app.router.add_get
    get("/", site.home)
    get("/style.css", site.stylesheet)
    get("/favicon.ico", site.favicon)
    get("/trust.json", site.trust)
    get("/trust.json{suffix}", site.trust)
    get("/list.json", site.current_list)
    get("/list.json{suffix}", site.current_list)
    get("/lists/versions/{name}", site.version)
    get("/log/checkpoint", site.checkpoint)
    get("/log/entries/{index}", site.entry)
    get("/log/proof/inclusion", site.inclusion)
    get("/log/proof/consistency", site.consistency)
    get("/verify", site.verify)
    get("/poster", site.poster)
    get("/login", site.login_form)
    app.router.add_post("/login", site.login)
    app.router.add_post("/logout", site.logout)
    get("/status", site.status)
    get("/metrics", site.metrics)
    return app


async def serve_web(app: web.Application, listen: str) -> web.AppRunner:
    """Start serving ``app`` on ``listen`` (``host:port``); stop it with ``runner.cleanup()``."""
    host, port = parse_listen(listen)
    # No access log: it would keep client addresses and whole request lines, and the SMS
    # webhooks mounted on this app (kopir.runner) carry phone numbers in their query strings.
    # auto_decompress: no form needs it; bad gzip is a 400.
    runner = web.AppRunner(
        app, access_log=None, auto_decompress=False, logger=ServerLog("kopir.web")
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise WebError(f"[web] listen {listen}: cannot listen there: {exc.strerror}") from None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner listens on (for ``listen = "127.0.0.1:0"``)."""
    address = runner.addresses[0]
    return int(address[1])
