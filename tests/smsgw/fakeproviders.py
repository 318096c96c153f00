"""Fake HTTP SMS providers on 127.0.0.1, built from PROTOCOLS.md "HTTP SMS providers".

``FakeProviders`` is one ``aiohttp.web`` server (port 0) that answers Twilio's, Vonage's,
Infobip's and the Android gateway app's send endpoints. It records every request, checks each
provider's credentials the way the provider does (a wrong one gets the provider's own "bad
credentials" answer), and answers from a script: ``respond("throttled", "ok")`` makes the next
two requests throttled then accepted; with the script empty every request is accepted.

Scripted answers: ``ok``, ``throttled``, ``bad_credentials``, ``invalid`` (a provider refusal
that quotes the number, to check scrubbing), ``server_error`` and, for Vonage, ``quota``.
``delay`` slows every answer so tests can see how many requests a backend has in flight.

``/generic/...`` is a made-up provider for the templated ``http`` backend: any method, a
``Bearer`` token, and a reply with the id at ``data.messages.0.id``; ``throttled_bare`` answers
429 without ``Retry-After``.

``sign_twilio`` computes ``X-Twilio-Signature`` from Twilio's description, and
``sign_android`` the Android app's ``X-Signature``, independently of ``smsgw``;
``post_android`` plays the app posting a webhook; ``serve`` runs webhook handlers on 127.0.0.1
for the callback tests; ``providers_in_thread`` runs the fake providers for a child process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-token-" + "x" * 19
VONAGE_KEY = "vonagekey"
VONAGE_SECRET = "vonage-secret"
INFOBIP_KEY = "infobip-api-key"
ANDROID_USER = "sms"
ANDROID_PASSWORD = "android-password"
ANDROID_WEBHOOK_KEY = "android-signing-key"
GENERIC_TOKEN = "generic-token"


@dataclass(frozen=True)
class Recorded:
    """One request a fake provider received."""

    provider: str
    path: str
    headers: Mapping[str, str]
    form: dict[str, str] | None
    json: Any
    method: str = "POST"
    query: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


def sign_twilio(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` as Twilio documents it: the full URL, then each POST parameter
    name followed by its value, sorted by name; HMAC-SHA1 keyed with the auth token; base64."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def sign_android(key: str, body: bytes, timestamp: str) -> str:
    """``X-Signature`` as the SMS Gateway app documents it: hex HMAC-SHA256, keyed with the
    signing key, of the raw body followed by the ``X-Timestamp`` value."""
    message = body.decode("utf-8") + timestamp
    return hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def android_event(event: str, payload: dict[str, Any]) -> bytes:
    """A webhook body shaped like the app's (deviceId, event, id, payload, webhookId)."""
    envelope = {
        "deviceId": "ffffffffceb0b1db0000018e937c815b",
        "event": event,
        "id": "Ey6ECgOkVVFjz3CL48B8C",
        "payload": payload,
        "webhookId": "LreFUt-Z3sSq0JufY9uWB",
    }
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


async def post_android(
    url: str, body: bytes, key: str = ANDROID_WEBHOOK_KEY, timestamp: float | None = None
) -> int:
    """POST ``body`` to ``url`` signed the way the app signs; the HTTP status."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    headers = {
        "Content-Type": "application/json",
        "X-Timestamp": stamp,
        "X-Signature": sign_android(key, body, stamp),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


def _basic_ok(request: web.Request, user: str, password: str) -> bool:
    return basic_credentials(request.headers.get("Authorization", "")) == (user, password)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """The user and password of a ``Basic`` ``Authorization`` header (RFC 7617)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except ValueError:
        return None
    return (user, password) if sep else None


class FakeProviders:
    """All four providers' send endpoints on one loopback server."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[str] = deque()
        self.retry_after = "7"
        self.delay = 0.0
        """Seconds each request takes, to see how many a backend has in flight."""
        self.in_flight = 0
        self.most_in_flight = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def respond(self, *answers: str) -> None:
        """Answer the next requests with ``answers``, in order; then ``ok`` again."""
        self.script.extend(answers)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", self._twilio)
        app.router.add_post("/sms/json", self._vonage)
        app.router.add_post("/sms/2/text/advanced", self._infobip)
        app.router.add_post("/message", self._android)
        app.router.add_route("*", "/generic/{tail:.*}", self._generic)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, provider: str, request: web.Request) -> Recorded:
        form = json_body = None
        raw = await request.read()
        if request.content_type == "application/json":
            json_body = json.loads(raw)
        elif request.method != "GET":
            form = {k: str(v) for k, v in (await request.post()).items()}
        recorded = Recorded(
            provider, request.path, dict(request.headers), form, json_body,
            request.method, dict(request.query), raw,
        )  # fmt: skip
        self.requests.append(recorded)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return recorded

    def _next(self, credentials_ok: bool) -> str:
        answer = self.script.popleft() if self.script else "ok"
        return answer if credentials_ok else "bad_credentials"

    async def _twilio(self, request: web.Request) -> web.Response:
        await self._record("twilio", request)
        answer = self._next(_basic_ok(request, TWILIO_SID, TWILIO_TOKEN))
        if answer == "ok":
            sid = f"SM{next(self._ids):032x}"
            reply = {"sid": sid, "status": "queued", "num_segments": "1", "error_code": None}
            return web.json_response(reply, status=201)
        errors = {
            "throttled": (429, 20429, "Too Many Requests"),
            "bad_credentials": (401, 20003, "Authenticate"),
            "invalid": (400, 21211, "The 'To' number +77012345678 is not a valid phone number."),
            "server_error": (500, 20500, "Internal Server Error"),
        }
        status, code, message = errors[answer]
        return web.json_response(
            {"code": code, "message": message, "status": status},
            status=status,
            headers={"Retry-After": self.retry_after} if status == 429 else None,
        )

    async def _vonage(self, request: web.Request) -> web.Response:
        recorded = await self._record("vonage", request)
        form = recorded.form or {}
        ok = form.get("api_key") == VONAGE_KEY and form.get("api_secret") == VONAGE_SECRET
        answer = self._next(ok)
        if answer == "server_error":
            return web.Response(status=500, text="oops")
        statuses = {
            "ok": ("0", ""),
            "throttled": ("1", "Throttled"),
            "bad_credentials": ("4", "Bad Credentials"),
            "invalid": ("3", f"Invalid to address {form.get('to')}"),
            "quota": ("9", "Partner quota exceeded"),
        }
        status, text = statuses[answer]
        message: dict[str, str] = {"to": form.get("to", ""), "status": status}
        if status == "0":
            message["message-id"] = f"0A{next(self._ids):014X}"
        else:
            message["error-text"] = text
        return web.json_response({"message-count": "1", "messages": [message]})

    async def _infobip(self, request: web.Request) -> web.Response:
        recorded = await self._record("infobip", request)
        ok = request.headers.get("Authorization") == f"App {INFOBIP_KEY}"
        answer = self._next(ok)
        if answer == "ok":
            to = recorded.json["messages"][0]["destinations"][0]["to"]
            status = {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED"}
            message = {"messageId": f"ib-{next(self._ids)}", "status": status, "to": to}
            return web.json_response({"bulkId": "bulk-1", "messages": [message]})
        errors = {
            "throttled": (429, "TOO_MANY_REQUESTS", "Too many requests"),
            "bad_credentials": (401, "UNAUTHORIZED", "Invalid login details"),
            "invalid": (400, "BAD_REQUEST", "Invalid destination 77012345678"),
            "server_error": (500, "GENERAL_ERROR", "Something went wrong"),
        }
        status_code, message_id, text = errors[answer]
        body = {"requestError": {"serviceException": {"messageId": message_id, "text": text}}}
        headers = {"Retry-After": self.retry_after} if status_code == 429 else None
        return web.json_response(body, status=status_code, headers=headers)

    async def _android(self, request: web.Request) -> web.Response:
        await self._record("android", request)
        answer = self._next(_basic_ok(request, ANDROID_USER, ANDROID_PASSWORD))
        if answer == "ok":
            reply = {"id": f"msg{next(self._ids):05d}x", "state": "Pending", "recipients": []}
            return web.json_response(reply, status=202)
        if answer == "bad_credentials":
            return web.Response(status=401, text="Unauthorized")
        if answer == "throttled":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if answer == "invalid":
            return web.json_response({"message": "bad number +77012345678"}, status=400)
        return web.Response(status=500, text="oops")

    async def _generic(self, request: web.Request) -> web.Response:
        await self._record("generic", request)
        answer = self._next(request.headers.get("Authorization") == f"Bearer {GENERIC_TOKEN}")
        if answer == "ok":
            reply = {"data": {"messages": [{"id": f"gen-{next(self._ids)}", "status": "queued"}]}}
            return web.json_response(reply, status=201)
        if answer == "throttled":
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": self.retry_after}
            )
        statuses = {
            "throttled_bare": (429, "slow down"),
            "bad_credentials": (401, "invalid token"),
            "invalid": (400, "number +77012345678 is not valid"),
            "server_error": (503, "maintenance"),
            "no_id": (200, "{}"),
        }
        status, text = statuses[answer]
        return web.Response(status=status, text=text)


@asynccontextmanager
async def running_providers() -> AsyncIterator[FakeProviders]:
    providers = FakeProviders()
    await providers.start()
    try:
        yield providers
    finally:
        await providers.close()


@asynccontextmanager
async def serve(routes: Mapping[str, Any]) -> AsyncIterator[str]:
    """Serve webhook handlers (path → handler, GET and POST) on 127.0.0.1; yields the base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


@contextmanager
def providers_in_thread() -> Iterator[FakeProviders]:
    """The fake providers served from their own thread and event loop, so a test can run a
    child process (the ``kopir`` CLI) against them; stopped when the block ends."""
    providers = FakeProviders()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(providers.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(providers.close())
        loop.close()

    thread = threading.Thread(target=serve_forever, name="fake-providers", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield providers
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
