"""HTTP SMS providers (Twilio, Vonage, Infobip, the Android SMS gateway app) as ``Backend``s.

Theory of operation
-------------------
Each backend owns one ``aiohttp.ClientSession`` (opened in ``start``, closed in ``stop``) and
submits one HTTP request per ``OutgoingSms``, at most ``concurrency`` at a time, each bounded by
``timeout`` seconds. The request and reply shapes are those of PROTOCOLS.md "HTTP SMS
providers". Building a request (``_request``) and reading a reply (``_result``) are plain
functions of values; only ``_HttpBackend._send_one`` does I/O, and it turns every transport
error (refused, reset, timed out) into ``retry``: the backend never re-sends on its own, the
queue decides (DESIGN.md §6 smsgw).

Replies map to results the same way for every provider: accepted with the provider's message
id (normalised by ``normalize_provider_id``); throttled (HTTP 429, or the provider's own code)
and server errors are ``retry``, honouring ``Retry-After`` when given; bad credentials are
``failed`` with "bad credentials"; anything else is ``failed`` with the provider's message.
Provider messages can quote the number they refused, so every run of 7 or more digits is
scrubbed from them, and log lines name a recipient only by ``OutgoingSms.ref[:12]``.

These providers take text, not PDUs: we send ``OutgoingSms.text``, and each part of a multipart
message as its own SMS (the queue already split it). A provider may join or re-split parts on
its side; that costs at most a few characters of header per part and is acceptable.

Delivery reports come by webhook. ``twilio_status_route``, ``vonage_receipt_route`` and
``infobip_report_route`` build ``aiohttp.web`` handlers that check each report strictly,
answer 4xx with a reason for anything they cannot use (never 500), and only then call
``on_receipt``. Twilio reports must carry a valid ``X-Twilio-Signature``; Vonage signs only
optionally, so its unsigned receipts are accepted but validated field by field.

The Android gateway app asks its user to confirm past 30 SMS per 30 minutes, so that backend
counts its sends in a sliding window (``SlidingWindow``, sans-IO, time passed in) and answers
``retry`` with the wait when the window is full.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from smsgw.backend import (
    InboundHandler,
    OutgoingSms,
    Receipt,
    ReceiptHandler,
    ReceiptStatus,
    SendResult,
)
from smsgw.errors import SmsError
from smsgw.queue import normalize_provider_id

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UCS2 = 0x08
"""``data_coding`` of UCS-2 text."""
RETRY_DELAY = 30.0
"""Seconds to wait after a throttle or server error that named no ``Retry-After``."""
MAX_RETRY_AFTER = 3600.0
BAD_CREDENTIALS = "bad credentials"
_DIGITS = re.compile(r"\+?\d(?:[\s().-]?\d){6,}")
_PROVIDER_ID = re.compile(r"[0-9A-Za-z._:-]{1,128}")
_MAX_FIELDS = 100


class ProviderError(SmsError):
    """An HTTP provider backend used wrongly (not started, bad base URL)."""


def scrub(text: str) -> str:
    """``text`` with every run of 7 or more digits (a phone number, perhaps) replaced."""
    return _DIGITS.sub("[number]", text)[:300]


def retry_after(header: str | None, default: float = RETRY_DELAY) -> float:
    """Seconds from a ``Retry-After`` header; ``default`` when absent or not a number of seconds."""
    try:
        seconds = float(header) if header is not None else default
    except ValueError:
        return default
    if seconds != seconds:  # NaN
        return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or ``None`` when it is not JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def http_result(message_id: int, status: int, header: str | None, what: str) -> SendResult | None:
    """The result every provider shares for an HTTP status, or ``None`` to read the body."""
    if status == 429:
        return SendResult(
            message_id, "retry", error=f"{what}: throttled", retry_after=retry_after(header)
        )
    if status in (401, 403):
        return SendResult(message_id, "failed", error=f"{what}: {BAD_CREDENTIALS}")
    if status >= 500:
        return SendResult(
            message_id, "retry", error=f"{what}: HTTP {status}", retry_after=retry_after(header)
        )
    return None


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic auth (RFC 7617, UTF-8)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Request:
    """One HTTP POST to a provider."""

    path: str
    form: dict[str, str] | None = field(default=None, repr=False)
    json: Any = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)


class _HttpBackend:
    """The I/O every provider shares: a session, a concurrency limit, transport errors."""

    name = "http"

    def __init__(self, base_url: str, *, concurrency: int = 4, timeout: float = 15.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ProviderError(f"{self.name}: base URL must start with http:// or https://")
        if concurrency < 1 or timeout <= 0:
            raise ProviderError(f"{self.name}: concurrency and timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None
        self._on_receipt: ReceiptHandler | None = None

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        """Open the session; receipts come through the webhook routes, not from here."""
        self._on_receipt = on_receipt
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._limit = asyncio.Semaphore(self.concurrency)

    async def send(self, batch: Sequence[OutgoingSms]) -> list[SendResult]:
        if self._session is None:
            raise ProviderError(f"{self.name}: backend not started; call start() first")
        return list(await asyncio.gather(*(self._send_one(sms) for sms in batch)))

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._on_receipt = None

    async def _send_one(self, sms: OutgoingSms) -> SendResult:
        assert self._session is not None and self._limit is not None
        async with self._limit:
            result = await self._post(self._session, sms)
        if result.status != "accepted":
            log.warning("%s: ref=%s %s: %s", self.name, sms.ref[:12], result.status, result.error)
        return result

    async def _post(self, session: aiohttp.ClientSession, sms: OutgoingSms) -> SendResult:
        req = self._request(sms)
        try:
            async with session.post(
                self.base_url + req.path,
                data=req.form,
                json=req.json,
                headers=req.headers,
            ) as resp:
                body = await resp.read()
                header = resp.headers.get("Retry-After")
                return self._result(sms.message_id, resp.status, header, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
            return SendResult(sms.message_id, "retry", error=f"{self.name}: {reason}")

    def _request(self, sms: OutgoingSms) -> Request:
        raise NotImplementedError

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        raise NotImplementedError


class TwilioBackend(_HttpBackend):
    """Twilio's Programmable Messaging API (``Messages.json``)."""

    name = "twilio"

    def __init__(
        self,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        if (from_ is None) == (messaging_service_sid is None):
            raise ProviderError("twilio: give exactly one of from_ and messaging_service_sid")
        self.account_sid = account_sid
        self._auth = basic_auth(account_sid, auth_token)
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback

    def __repr__(self) -> str:
        return f"TwilioBackend({self.base_url!r}, {self.account_sid!r})"

    def _request(self, sms: OutgoingSms) -> Request:
        form = {"To": sms.to, "Body": sms.text}
        if self.from_ is not None:
            form["From"] = self.from_
        if self.messaging_service_sid is not None:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.status_callback is not None:
            form["StatusCallback"] = self.status_callback
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        return Request(path, form=form, headers=self._auth)

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        shared = http_result(message_id, status, header, self.name)
        if shared is not None:
            return shared
        reply = parse_json(body)
        if not isinstance(reply, dict):
            return SendResult(message_id, "failed", error=f"twilio: HTTP {status}, no JSON reply")
        if status >= 300:
            message = scrub(str(reply.get("message", "")))
            return SendResult(message_id, "failed", error=f"twilio: {reply.get('code')}: {message}")
        sid = reply.get("sid")
        if not isinstance(sid, str) or not _PROVIDER_ID.fullmatch(sid):
            return SendResult(message_id, "failed", error="twilio: reply has no message sid")
        if reply.get("status") in ("failed", "undelivered"):
            error = f"twilio: {reply.get('status')}, error code {reply.get('error_code')}"
            return SendResult(message_id, "failed", normalize_provider_id(sid), error=error)
        return SendResult(message_id, "accepted", normalize_provider_id(sid))


_VONAGE_ERRORS = {"1": "throttled", "4": BAD_CREDENTIALS, "9": "quota exceeded"}


class VonageBackend(_HttpBackend):
    """Vonage's (Nexmo's) SMS API, ``/sms/json``."""

    name = "vonage"

    def __init__(
        self, base_url: str, api_key: str, api_secret: str, from_: str, **options: Any
    ) -> None:
        super().__init__(base_url, **options)
        self.api_key = api_key
        self._api_secret = api_secret
        self.from_ = from_

    def __repr__(self) -> str:
        return f"VonageBackend({self.base_url!r}, {self.api_key!r}, from_={self.from_!r})"

    def _request(self, sms: OutgoingSms) -> Request:
        form = {
            "api_key": self.api_key,
            "api_secret": self._api_secret,
            "from": self.from_,
            "to": sms.to.lstrip("+"),
            "text": sms.text,
            "type": "unicode" if sms.data_coding == UCS2 else "text",
        }
        return Request("/sms/json", form=form)

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        shared = http_result(message_id, status, header, self.name)
        if shared is not None:
            return shared
        reply = parse_json(body)
        messages = reply.get("messages") if isinstance(reply, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        if status >= 300 or not isinstance(first, dict):
            return SendResult(message_id, "failed", error=f"vonage: HTTP {status}, no messages")
        code = str(first.get("status"))
        if code == "0":
            provider_id = first.get("message-id")
            if not isinstance(provider_id, str) or not _PROVIDER_ID.fullmatch(provider_id):
                return SendResult(message_id, "failed", error="vonage: reply has no message-id")
            return SendResult(message_id, "accepted", normalize_provider_id(provider_id))
        known = _VONAGE_ERRORS.get(code)
        text = scrub(str(first.get("error-text", "")))
        error = f"vonage: {known}" if known else f"vonage: status {scrub(code)}: {text}"
        if code == "1":
            return SendResult(message_id, "retry", error=error, retry_after=retry_after(header))
        return SendResult(message_id, "failed", error=error)


class InfobipBackend(_HttpBackend):
    """Infobip's SMS API, ``/sms/2/text/advanced``."""

    name = "infobip"

    def __init__(self, base_url: str, api_key: str, from_: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._headers = {"Authorization": f"App {api_key}"}
        self.from_ = from_

    def __repr__(self) -> str:
        return f"InfobipBackend({self.base_url!r}, from_={self.from_!r})"

    def _request(self, sms: OutgoingSms) -> Request:
        message = {"from": self.from_, "destinations": [{"to": sms.to}], "text": sms.text}
        return Request("/sms/2/text/advanced", json={"messages": [message]}, headers=self._headers)

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        shared = http_result(message_id, status, header, self.name)
        if shared is not None:
            return shared
        reply = parse_json(body)
        if status >= 300:
            return SendResult(message_id, "failed", error=f"infobip: {_infobip_error(reply)}")
        messages = reply.get("messages") if isinstance(reply, dict) else None
        first = messages[0] if isinstance(messages, list) and messages else None
        if not isinstance(first, dict):
            return SendResult(message_id, "failed", error="infobip: reply has no messages")
        provider_id = first.get("messageId")
        group = _group(first.get("status"))
        if group in (1, 3) and isinstance(provider_id, str) and _PROVIDER_ID.fullmatch(provider_id):
            return SendResult(message_id, "accepted", normalize_provider_id(provider_id))
        state = first.get("status")
        name = state.get("name") if isinstance(state, dict) else None
        return SendResult(message_id, "failed", error=f"infobip: group {group}: {scrub(str(name))}")


def _group(status: object) -> int | None:
    group = status.get("groupId") if isinstance(status, dict) else None
    return group if isinstance(group, int) and not isinstance(group, bool) else None


def _infobip_error(reply: object) -> str:
    try:
        exception = reply["requestError"]["serviceException"]  # type: ignore[index]
        return scrub(f"{exception['messageId']}: {exception['text']}")
    except (KeyError, TypeError):
        return "request refused"


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds. Sans-IO: the caller passes ``now``."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ProviderError("the send limit and its window must be positive")
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def delay(self, now: float) -> float:
        """Seconds until one more event is allowed (0 when it is allowed now)."""
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    def take(self, now: float) -> None:
        self._times.append(now)

    def give_back(self, now: float) -> None:
        """Forget the event taken at ``now`` (the SMS was not sent after all)."""
        if now in self._times:
            self._times.remove(now)


class AndroidGatewayBackend(_HttpBackend):
    """The Android "SMS Gateway" app in local-server mode (``POST /message``).

    At most ``limit`` messages go out in any ``limit * min_interval`` seconds: 30 per 30 minutes
    by default, the most Android sends without asking the phone's user. Past that, ``send``
    answers ``retry`` with ``retry_after`` set to when a slot frees up.
    """

    name = "android"

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        min_interval: float = 60.0,
        *,
        limit: int = 30,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.username = username
        self._auth = basic_auth(username, password)
        self.window = SlidingWindow(limit, limit * min_interval)
        self._clock = clock

    def __repr__(self) -> str:
        return f"AndroidGatewayBackend({self.base_url!r}, {self.username!r})"

    async def _send_one(self, sms: OutgoingSms) -> SendResult:
        now = self._clock()
        wait = self.window.delay(now)
        if wait > 0:
            error = f"android: {self.window.limit} SMS sent in the window; the phone would ask"
            return SendResult(sms.message_id, "retry", error=error, retry_after=wait)
        self.window.take(now)
        result = await super()._send_one(sms)
        if result.status != "accepted":  # the phone sent nothing, so the slot is free again
            self.window.give_back(now)
        return result

    def _request(self, sms: OutgoingSms) -> Request:
        body = {"message": sms.text, "phoneNumbers": [sms.to]}
        return Request("/message", json=body, headers=self._auth)

    def _result(self, message_id: int, status: int, header: str | None, body: bytes) -> SendResult:
        shared = http_result(message_id, status, header, self.name)
        if shared is not None:
            return shared
        reply = parse_json(body)
        provider_id = reply.get("id") if isinstance(reply, dict) else None
        if status >= 300 or not isinstance(provider_id, str):
            message = reply.get("message") if isinstance(reply, dict) else None
            return SendResult(
                message_id, "failed", error=f"android: HTTP {status}: {scrub(str(message))}"
            )
        if not _PROVIDER_ID.fullmatch(provider_id):
            return SendResult(message_id, "failed", error="android: reply has a malformed id")
        return SendResult(message_id, "accepted", normalize_provider_id(provider_id))


# Webhooks -------------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL and the sorted parameters."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


_TWILIO_FINAL: dict[str, ReceiptStatus] = {
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
}
_TWILIO_INTERIM = {"accepted", "scheduled", "queued", "sending", "sent", "read", "canceled"}


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")


async def _read_form(request: web.Request) -> list[tuple[str, str]] | web.Response:
    """The form fields of a urlencoded POST, or the 4xx answer to give instead."""
    if request.content_type != "application/x-www-form-urlencoded":
        return _refuse(415, "expected application/x-www-form-urlencoded")
    body = await request.read()
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        return _refuse(400, "the form is not valid UTF-8 or has too many fields")


def twilio_status_route(auth_token: str, public_url: str, on_receipt: ReceiptHandler) -> Handler:
    """A handler for Twilio's status callbacks at ``public_url`` (the URL Twilio was given).

    The signature covers the URL as Twilio saw it, so ``public_url`` must be exactly the
    ``StatusCallback`` we sent, not whatever a reverse proxy forwards to us.
    """

    async def handle(request: web.Request) -> web.Response:
        form = await _read_form(request)
        if isinstance(form, web.Response):
            return form
        given = request.headers.get("X-Twilio-Signature", "")
        expected = twilio_signature(auth_token, public_url, form)
        if not given or not hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode()
        ):
            return _refuse(403, "missing or wrong X-Twilio-Signature")
        fields = dict(form)
        sid, state = fields.get("MessageSid", ""), fields.get("MessageStatus", "")
        if not _PROVIDER_ID.fullmatch(sid):
            return _refuse(400, "MessageSid missing or malformed")
        if state in _TWILIO_INTERIM:
            return web.Response(status=204)
        if state not in _TWILIO_FINAL:
            return _refuse(400, "MessageStatus missing or unknown")
        code = fields.get("ErrorCode")
        error = f"twilio error code {scrub(code)}" if code else None
        on_receipt(Receipt(normalize_provider_id(sid), _TWILIO_FINAL[state], error))
        return web.Response(status=204)

    return handle


_VONAGE_FINAL: dict[str, ReceiptStatus] = {
    "delivered": "delivered",
    "failed": "failed",
    "rejected": "failed",
    "expired": "expired",
}
_VONAGE_INTERIM = {"accepted", "buffered", "unknown"}
_ERR_CODE = re.compile(r"\d{1,4}")


def vonage_receipt_route(on_receipt: ReceiptHandler) -> Handler:
    """A handler for Vonage delivery receipts, sent as a GET query, a form or JSON."""

    async def handle(request: web.Request) -> web.Response:
        fields = await _vonage_fields(request)
        if isinstance(fields, web.Response):
            return fields
        provider_id, state = fields.get("messageId"), fields.get("status")
        if not isinstance(provider_id, str) or not _PROVIDER_ID.fullmatch(provider_id):
            return _refuse(400, "messageId missing or malformed")
        if state in _VONAGE_INTERIM:
            return web.Response(status=204)
        if not isinstance(state, str) or state not in _VONAGE_FINAL:
            return _refuse(400, "status missing or unknown")
        code = fields.get("err-code")
        if code is not None and not (isinstance(code, str) and _ERR_CODE.fullmatch(code)):
            return _refuse(400, "err-code malformed")
        error = f"vonage err-code {code}" if code not in (None, "0") else None
        on_receipt(Receipt(normalize_provider_id(provider_id), _VONAGE_FINAL[state], error))
        return web.Response(status=204)

    return handle


async def _vonage_fields(request: web.Request) -> Mapping[str, object] | web.Response:
    if request.method == "GET":
        return dict(request.query)
    if request.content_type == "application/json":
        reply = parse_json(await request.read())
        return reply if isinstance(reply, dict) else _refuse(400, "expected a JSON object")
    form = await _read_form(request)
    return form if isinstance(form, web.Response) else dict(form)


_INFOBIP_GROUPS: dict[int, ReceiptStatus] = {
    2: "failed",
    3: "delivered",
    4: "expired",
    5: "failed",
}


def infobip_report_route(on_receipt: ReceiptHandler) -> Handler:
    """A handler for Infobip delivery reports: JSON ``{"results": [...]}``.

    Every result is checked before any is recorded, so a report is taken whole or not at all.
    """

    async def handle(request: web.Request) -> web.Response:
        reply = parse_json(await request.read())
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or not 0 < len(results) <= _MAX_FIELDS:
            return _refuse(400, "expected a JSON object with a non-empty results list")
        receipts = []
        for result in results:
            provider_id = result.get("messageId") if isinstance(result, dict) else None
            if not isinstance(provider_id, str) or not _PROVIDER_ID.fullmatch(provider_id):
                return _refuse(400, "a result has no valid messageId")
            group = _group(result.get("status"))
            if group == 1:
                continue
            if group not in _INFOBIP_GROUPS:
                return _refuse(400, "a result has no valid status.groupId")
            error = None if group == 3 else f"infobip status group {group}"
            receipts.append(
                Receipt(normalize_provider_id(provider_id), _INFOBIP_GROUPS[group], error)
            )
        for receipt in receipts:
            on_receipt(receipt)
        return web.Response(status=204)

    return handle
