"""Provider webhooks: delivery reports and inbound SMS, as ``aiohttp.web`` handlers.

Theory of operation
-------------------
Each factory returns one handler that reads a provider's callback, checks it strictly, and only
then calls ``on_receipt`` (a ``Receipt``) or ``on_inbound`` (an ``Inbound``). Anything it cannot
use gets a 4xx with a one-line reason, never a 500: a provider retries on 5xx, and a malformed
callback will not get better. The one deliberate 5xx is 503 when the backend behind the route
is not running yet (the callback raises ``WebhookUnavailable``), so the report is sent again.

Signatures are checked where the provider signs (PROTOCOLS.md "HTTP SMS providers"):
- Twilio: ``X-Twilio-Signature``, base64 HMAC-SHA1 over the public URL Twilio was given and the
  sorted form fields, keyed with the auth token. The URL must be the one Twilio used, not what
  a reverse proxy forwards to us.
- The Android SMS gateway app: ``X-Signature``, hex HMAC-SHA256 over the raw body followed by
  ``X-Timestamp`` (Unix seconds), keyed with the app's webhook signing key. A timestamp more
  than ``MAX_SKEW`` seconds away from our clock is refused, so an old callback cannot be
  replayed.
- Vonage signs only optionally and Infobip not at all: their receipts are accepted unsigned but
  validated field by field; a forged receipt can only mark a message delivered or failed.

``serve_webhooks`` runs a set of handlers on a loopback port for the application or the tests.
Inbound SMS can delete subscribers (STOP) and spend SMS (replies), so only signed routes
(Twilio, Android) deliver inbound messages.

Bad bytes get a 4xx too. A header that is not UTF-8 (aiohttp hands it over as lone surrogates)
fails the signature check like any wrong signature; a body whose ``Content-Encoding`` does not
decode is a 400; a request aiohttp's own HTTP parser refuses (a control byte in a header, say)
gets aiohttp's 400 and, from ``serve_webhooks``, one warning line (``ServerLog``) instead of
aiohttp's traceback, which quotes the raw request, query string included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from smsgw.backend import Inbound, InboundHandler, Receipt, ReceiptHandler, ReceiptStatus
from smsgw.errors import SmsError
from smsgw.http import PROVIDER_ID, parse_json, scrub
from smsgw.queue import normalize_provider_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TWILIO_STATUS_PATH = "/sms/twilio/status"
TWILIO_INBOUND_PATH = "/sms/twilio/inbound"
VONAGE_PATH = "/sms/vonage/receipt"
INFOBIP_PATH = "/sms/infobip/report"
ANDROID_PATH = "/sms/android/events"
MAX_SKEW = 300.0
"""Seconds an Android webhook's ``X-Timestamp`` may be away from our clock."""
MAX_TEXT = 1600
"""The longest inbound text taken (10 concatenated UCS-2 parts is 670 characters)."""
_MAX_FIELDS = 100
_SENDER = re.compile(r"\+?[0-9A-Za-z][0-9A-Za-z ()./-]{0,31}")
_ERR_CODE = re.compile(r"\d{1,4}")
_STAMP = re.compile(r"[0-9]{1,20}")


class WebhookUnavailable(SmsError):
    """A webhook arrived while its backend is not running; the provider should retry."""


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, for text a request controls. aiohttp decodes header bytes that are
    not UTF-8 (``X-Timestamp: \\xff``) to lone surrogates, which a plain ``encode()`` refuses
    with a ``UnicodeEncodeError``; they become ``?`` here, so such a header just fails the
    signature check (kopir.web.auth does the same)."""
    return text.encode("utf-8", "replace")


def twilio_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL and the sorted parameters."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(_utf8(auth_token), _utf8(data), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def android_signature(key: str, body: bytes, timestamp: str) -> str:
    """The Android gateway app's ``X-Signature``: hex HMAC-SHA256 of the body then the timestamp."""
    return hmac.new(_utf8(key), body + _utf8(timestamp), hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(_utf8(given), _utf8(expected))


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")


async def _read(request: web.Request) -> bytes | web.Response:
    """The request's body, or a 400 when it cannot be read: a ``Content-Encoding`` (gzip,
    deflate) that does not decode makes ``request.read()`` raise, which aiohttp answers 500."""
    try:
        return await request.read()
    except web.RequestPayloadError:
        return _refuse(400, "the body could not be read (a bad Content-Encoding?)")


def _deliver(call: Callable[[], None]) -> web.Response:
    """Run the callback; 204, or 503 when the backend is not running."""
    try:
        call()
    except WebhookUnavailable as exc:
        return _refuse(503, str(exc))
    return web.Response(status=204)


def _valid_id(value: object) -> str | None:
    """A provider message id, normalised, or None when it is missing or malformed."""
    if isinstance(value, str) and PROVIDER_ID.fullmatch(value):
        return normalize_provider_id(value)
    return None


async def _read_form(request: web.Request) -> list[tuple[str, str]] | web.Response:
    """The form fields of a urlencoded POST, or the 4xx answer to give instead."""
    if request.content_type != "application/x-www-form-urlencoded":
        return _refuse(415, "expected application/x-www-form-urlencoded")
    body = await _read(request)
    if isinstance(body, web.Response):
        return body
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except ValueError:
        return _refuse(400, "the form is not valid UTF-8 or has too many fields")


async def _twilio_form(
    request: web.Request, auth_token: str, public_url: str
) -> dict[str, str] | web.Response:
    """The fields of a Twilio callback whose signature is right, or the answer to give."""
    form = await _read_form(request)
    if isinstance(form, web.Response):
        return form
    given = request.headers.get("X-Twilio-Signature", "")
    if not _same(given, twilio_signature(auth_token, public_url, form)):
        return _refuse(403, "missing or wrong X-Twilio-Signature")
    return dict(form)


# Twilio ---------------------------------------------------------------------------------------

_TWILIO_FINAL: dict[str, ReceiptStatus] = {
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
}
_TWILIO_INTERIM = {"accepted", "scheduled", "queued", "sending", "sent", "read", "canceled"}


def twilio_status_route(auth_token: str, public_url: str, on_receipt: ReceiptHandler) -> Handler:
    """A handler for Twilio's status callbacks at ``public_url`` (the ``StatusCallback`` sent)."""

    async def handle(request: web.Request) -> web.Response:
        fields = await _twilio_form(request, auth_token, public_url)
        if isinstance(fields, web.Response):
            return fields
        sid, state = _valid_id(fields.get("MessageSid")), fields.get("MessageStatus", "")
        if sid is None:
            return _refuse(400, "MessageSid missing or malformed")
        if state in _TWILIO_INTERIM:
            return web.Response(status=204)
        if state not in _TWILIO_FINAL:
            return _refuse(400, "MessageStatus missing or unknown")
        code = fields.get("ErrorCode")
        error = f"twilio error code {scrub(code)}" if code else None
        return _deliver(lambda: on_receipt(Receipt(sid, _TWILIO_FINAL[state], error)))

    return handle


def twilio_inbound_route(auth_token: str, public_url: str, on_inbound: InboundHandler) -> Handler:
    """A handler for inbound SMS Twilio posts to ``public_url`` (``From``, ``Body``).

    It answers an empty TwiML ``<Response/>``: replies go through the queue, rate-limited,
    never straight back from Twilio.
    """

    async def handle(request: web.Request) -> web.Response:
        fields = await _twilio_form(request, auth_token, public_url)
        if isinstance(fields, web.Response):
            return fields
        message = _inbound(fields.get("From"), fields.get("Body"))
        if isinstance(message, web.Response):
            return message
        answer = _deliver(lambda: on_inbound(message))
        if answer.status != 204:
            return answer
        return web.Response(text="<Response/>", content_type="text/xml")

    return handle


def _inbound(sender: object, text: object) -> Inbound | web.Response:
    if not isinstance(sender, str) or not _SENDER.fullmatch(sender):
        return _refuse(400, "the sender is missing or not a phone number or sender id")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return _refuse(400, f"the text is missing or longer than {MAX_TEXT} characters")
    return Inbound(sender, text)


# Vonage ---------------------------------------------------------------------------------------

_VONAGE_FINAL: dict[str, ReceiptStatus] = {
    "delivered": "delivered",
    "failed": "failed",
    "rejected": "failed",
    "expired": "expired",
}
_VONAGE_INTERIM = {"accepted", "buffered", "unknown"}


def vonage_receipt_route(on_receipt: ReceiptHandler) -> Handler:
    """A handler for Vonage delivery receipts, sent as a GET query, a form or JSON."""

    async def handle(request: web.Request) -> web.Response:
        fields = await _vonage_fields(request)
        if isinstance(fields, web.Response):
            return fields
        provider_id, state = _valid_id(fields.get("messageId")), fields.get("status")
        if provider_id is None:
            return _refuse(400, "messageId missing or malformed")
        if state in _VONAGE_INTERIM:
            return web.Response(status=204)
        if not isinstance(state, str) or state not in _VONAGE_FINAL:
            return _refuse(400, "status missing or unknown")
        code = fields.get("err-code")
        if code is not None and not (isinstance(code, str) and _ERR_CODE.fullmatch(code)):
            return _refuse(400, "err-code malformed")
        error = f"vonage err-code {code}" if code not in (None, "0") else None
        return _deliver(lambda: on_receipt(Receipt(provider_id, _VONAGE_FINAL[state], error)))

    return handle


async def _vonage_fields(request: web.Request) -> Mapping[str, object] | web.Response:
    if request.method == "GET":
        return dict(request.query)
    if request.content_type == "application/json":
        body = await _read(request)
        if isinstance(body, web.Response):
            return body
        reply = parse_json(body)
        return reply if isinstance(reply, dict) else _refuse(400, "expected a JSON object")
    form = await _read_form(request)
    return form if isinstance(form, web.Response) else dict(form)


# Infobip --------------------------------------------------------------------------------------

_INFOBIP_GROUPS: dict[int, ReceiptStatus] = {
    2: "failed",
    3: "delivered",
    4: "expired",
    5: "failed",
}


def infobip_group(status: object) -> int | None:
    """``status.groupId`` of an Infobip message, when it is a whole number."""
    group = status.get("groupId") if isinstance(status, dict) else None
    return group if isinstance(group, int) and not isinstance(group, bool) else None


def infobip_report_route(on_receipt: ReceiptHandler) -> Handler:
    """A handler for Infobip delivery reports: JSON ``{"results": [...]}``.

    Every result is checked before any is recorded, so a report is taken whole or not at all.
    """

    async def handle(request: web.Request) -> web.Response:
        body = await _read(request)
        if isinstance(body, web.Response):
            return body
        reply = parse_json(body)
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or not 0 < len(results) <= _MAX_FIELDS:
            return _refuse(400, "expected a JSON object with a non-empty results list")
        receipts = []
        for result in results:
            provider_id = _valid_id(result.get("messageId") if isinstance(result, dict) else None)
            if provider_id is None:
                return _refuse(400, "a result has no valid messageId")
            group = infobip_group(result.get("status"))
            if group == 1:
                continue
            if group not in _INFOBIP_GROUPS:
                return _refuse(400, "a result has no valid status.groupId")
            error = None if group == 3 else f"infobip status group {group}"
            receipts.append(Receipt(provider_id, _INFOBIP_GROUPS[group], error))

        def record() -> None:
            for receipt in receipts:
                on_receipt(receipt)

        return _deliver(record)

    return handle


# The Android SMS gateway app ------------------------------------------------------------------

_ANDROID_IGNORED = {"sms:sent", "system:ping", "sms:data-received", "mms:received"}


def android_webhook_route(
    key: str,
    on_receipt: ReceiptHandler,
    on_inbound: InboundHandler,
    *,
    clock: Callable[[], float] = time.time,
) -> Handler:
    """A handler for the Android gateway app's signed webhooks.

    ``sms:received`` becomes an ``Inbound``; ``sms:delivered`` and ``sms:failed`` become
    receipts for the id ``POST /message`` returned; ``sms:sent`` and pings are acknowledged.
    """
    if not key:
        raise SmsError("android webhooks need the app's signing key; set [sms.android] webhook_key")

    async def handle(request: web.Request) -> web.Response:
        body = await _read(request)
        if isinstance(body, web.Response):
            return body
        refused = _android_refusal(request, key, body, clock())
        if refused is not None:
            return refused
        envelope = parse_json(body)
        event = envelope.get("event") if isinstance(envelope, dict) else None
        payload = envelope.get("payload") if isinstance(envelope, dict) else None
        if not isinstance(payload, dict):
            return _refuse(400, "expected a JSON object with an event and a payload object")
        if event in _ANDROID_IGNORED:
            return web.Response(status=204)
        if event == "sms:received":
            message = _inbound(payload.get("phoneNumber"), payload.get("message"))
            if isinstance(message, web.Response):
                return message
            return _deliver(lambda: on_inbound(message))
        receipt = _android_receipt(event, payload)
        if isinstance(receipt, web.Response):
            return receipt
        return _deliver(lambda: on_receipt(receipt))

    return handle


def _android_refusal(
    request: web.Request, key: str, body: bytes, now: float
) -> web.Response | None:
    timestamp = request.headers.get("X-Timestamp", "")
    if not _same(request.headers.get("X-Signature", ""), android_signature(key, body, timestamp)):
        return _refuse(403, "missing or wrong X-Signature")
    # At most 20 digits: int() of a longer run may raise, and int - float may overflow.
    if not (_STAMP.fullmatch(timestamp) and abs(int(timestamp) - now) <= MAX_SKEW):
        return _refuse(403, f"X-Timestamp is more than {MAX_SKEW:g}s away from our clock")
    return None


def _android_receipt(event: object, payload: dict[str, object]) -> Receipt | web.Response:
    if event not in ("sms:delivered", "sms:failed"):
        return _refuse(400, "event missing or unknown")
    provider_id = _valid_id(payload.get("messageId"))
    if provider_id is None:
        return _refuse(400, "messageId missing or malformed")
    if event == "sms:delivered":
        return Receipt(provider_id, "delivered")
    reason = payload.get("reason")
    error = f"android: {scrub(reason)}" if isinstance(reason, str) and reason else "android: failed"
    return Receipt(provider_id, "failed", error)


# Serving --------------------------------------------------------------------------------------


class ServerLog(logging.Logger):
    """The error log of one aiohttp server (``AppRunner(..., logger=ServerLog(name))``), under
    ``aiohttp.server``. A request whose bytes aiohttp could not parse (answered 400 by aiohttp)
    or whose body did not decode (answered 400 by ``_read``; aiohttp then logs the error again
    while it drains the rest) is logged as one warning line naming the error's type: aiohttp
    would log a traceback quoting the request's bytes, query string included, and bad bytes
    from a client are no fault here. Anything else (a handler that raised) keeps its traceback.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.parent = logging.getLogger("aiohttp.server")

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: Any = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if isinstance(exc_info, HttpProcessingError | web.RequestPayloadError):
            self.warning("refused a malformed HTTP request (%s)", type(exc_info).__name__)
            return
        super().exception(
            msg, *args, exc_info=exc_info, stack_info=stack_info, stacklevel=stacklevel, extra=extra
        )


@dataclass(frozen=True)
class WebhookServer:
    """Webhook handlers served by ``serve_webhooks``; ``url`` is where they listen."""

    url: str
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve_webhooks(
    routes: Mapping[str, Handler], host: str = "127.0.0.1", port: int = 0
) -> WebhookServer:
    """Serve ``routes`` (path → handler, GET and POST) on ``host:port`` (loopback by default)."""
    app = web.Application(client_max_size=64 * 1024)
    for path, handler in routes.items():
        app.router.add_route("GET", path, handler)
        app.router.add_route("POST", path, handler)
    # Access logs would show query strings.
    runner = web.AppRunner(app, access_log=None, logger=ServerLog("smsgw.webhooks"))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return WebhookServer(f"http://{shown}:{bound_port}", runner)
