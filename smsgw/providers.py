"""The HTTP SMS providers (Twilio, Vonage, Infobip, the Android SMS gateway app) as ``Backend``s.

Theory of operation
-------------------
Each backend is an ``HttpBackend`` (``smsgw.http``: session, concurrency, transport errors) with
two plain functions: ``_request`` builds the provider's documented request for one SMS, and
``_result`` reads its reply (PROTOCOLS.md "HTTP SMS providers"). Accepted messages carry the
provider's message id, normalised by ``normalize_provider_id`` so receipts find them.

These providers take text, not PDUs: we send ``OutgoingSms.text``, and each part of a multipart
message as its own SMS (the queue already split it). A provider may join or re-split parts on
its side; that costs at most a few characters of header per part and is acceptable.

Delivery reports and inbound SMS come by webhook. ``routes()`` gives each backend's
``aiohttp.web`` handlers (``smsgw.webhooks``), keyed by path, to mount on the application's web
server; they hand what they receive to the callbacks given to ``start``, and answer 503 until
the backend is started, so the provider tries again later instead of losing the report.

The Android gateway app asks its user to confirm past 30 SMS per 30 minutes, so that backend
counts its sends in a sliding window (``SlidingWindow``, sans-IO, time passed in) and answers
``retry`` with the wait when the window is full.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from smsgw.backend import Inbound, OutgoingSms, Receipt, SendResult
from smsgw.http import (
    BAD_CREDENTIALS,
    PROVIDER_ID,
    HttpBackend,
    ProviderError,
    Request,
    basic_auth,
    http_result,
    parse_json,
    retry_after,
    scrub,
)
from smsgw.queue import normalize_provider_id
from smsgw.webhooks import (
    ANDROID_PATH,
    INFOBIP_PATH,
    TWILIO_INBOUND_PATH,
    TWILIO_STATUS_PATH,
    VONAGE_PATH,
    Handler,
    WebhookUnavailable,
    android_webhook_route,
    infobip_group,
    infobip_report_route,
    twilio_inbound_route,
    twilio_status_route,
    vonage_receipt_route,
)

UCS2 = 0x08
"""``data_coding`` of UCS-2 text."""


class _Receiving(HttpBackend):
    """An HTTP backend whose webhooks feed the callbacks given to ``start``."""

    def routes(self) -> dict[str, Handler]:
        """Webhook handlers by path; none by default."""
        return {}

    def _receipt(self, receipt: Receipt) -> None:
        if self._on_receipt is None:
            raise WebhookUnavailable(f"{self.name}: backend not started")
        self._on_receipt(receipt)

    def _inbound(self, message: Inbound) -> None:
        if self._on_inbound is None:
            raise WebhookUnavailable(f"{self.name}: backend not started")
        self._on_inbound(message)


class TwilioBackend(_Receiving):
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
        inbound_url: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        if (from_ is None) == (messaging_service_sid is None):
            raise ProviderError("twilio: give exactly one of from_ and messaging_service_sid")
        self.account_sid = account_sid
        self._token = auth_token
        self._auth = basic_auth(account_sid, auth_token)
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.inbound_url = inbound_url
        """The public URL Twilio posts inbound SMS to (it signs with exactly this URL)."""

    def routes(self) -> dict[str, Handler]:
        """The status callback (if ``status_callback`` is set) and inbound SMS (``inbound_url``)."""
        routes = {}
        if self.status_callback:
            handler = twilio_status_route(self._token, self.status_callback, self._receipt)
            routes[TWILIO_STATUS_PATH] = handler
        if self.inbound_url:
            handler = twilio_inbound_route(self._token, self.inbound_url, self._inbound)
            routes[TWILIO_INBOUND_PATH] = handler
        return routes

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
        if not isinstance(sid, str) or not PROVIDER_ID.fullmatch(sid):
            return SendResult(message_id, "failed", error="twilio: reply has no message sid")
        if reply.get("status") in ("failed", "undelivered"):
            error = f"twilio: {reply.get('status')}, error code {reply.get('error_code')}"
            return SendResult(message_id, "failed", normalize_provider_id(sid), error=error)
        return SendResult(message_id, "accepted", normalize_provider_id(sid))


_VONAGE_ERRORS = {"1": "throttled", "4": BAD_CREDENTIALS, "9": "quota exceeded"}


class VonageBackend(_Receiving):
    """Vonage's (Nexmo's) SMS API, ``/sms/json``."""

    name = "vonage"

    def __init__(
        self, base_url: str, api_key: str, api_secret: str, from_: str, **options: Any
    ) -> None:
        super().__init__(base_url, **options)
        self.api_key = api_key
        self._api_secret = api_secret
        self.from_ = from_

    def routes(self) -> dict[str, Handler]:
        return {VONAGE_PATH: vonage_receipt_route(self._receipt)}

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
            if not isinstance(provider_id, str) or not PROVIDER_ID.fullmatch(provider_id):
                return SendResult(message_id, "failed", error="vonage: reply has no message-id")
            return SendResult(message_id, "accepted", normalize_provider_id(provider_id))
        known = _VONAGE_ERRORS.get(code)
        text = scrub(str(first.get("error-text", "")))
        error = f"vonage: {known}" if known else f"vonage: status {scrub(code)}: {text}"
        if code == "1":
            return SendResult(message_id, "retry", error=error, retry_after=retry_after(header))
        return SendResult(message_id, "failed", error=error)


class InfobipBackend(_Receiving):
    """Infobip's SMS API, ``/sms/2/text/advanced``."""

    name = "infobip"

    def __init__(self, base_url: str, api_key: str, from_: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._headers = {"Authorization": f"App {api_key}"}
        self.from_ = from_

    def routes(self) -> dict[str, Handler]:
        return {INFOBIP_PATH: infobip_report_route(self._receipt)}

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
        group = infobip_group(first.get("status"))
        if group in (1, 3) and isinstance(provider_id, str) and PROVIDER_ID.fullmatch(provider_id):
            return SendResult(message_id, "accepted", normalize_provider_id(provider_id))
        state = first.get("status")
        name = state.get("name") if isinstance(state, dict) else None
        return SendResult(message_id, "failed", error=f"infobip: group {group}: {scrub(str(name))}")


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


class AndroidGatewayBackend(_Receiving):
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
        webhook_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(base_url, **options)
        self.username = username
        self._auth = basic_auth(username, password)
        self.window = SlidingWindow(limit, limit * min_interval)
        self._webhook_key = webhook_key
        self._clock = clock

    def routes(self) -> dict[str, Handler]:
        """The app's signed webhooks (``sms:received``, ``sms:delivered``, ``sms:failed``...),
        when a signing key is set: unsigned ones could delete subscribers or spend SMS."""
        if not self._webhook_key:
            return {}
        route = android_webhook_route(self._webhook_key, self._receipt, self._inbound)
        return {ANDROID_PATH: route}

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
        if not PROVIDER_ID.fullmatch(provider_id):
            return SendResult(message_id, "failed", error="android: reply has a malformed id")
        return SendResult(message_id, "accepted", normalize_provider_id(provider_id))
