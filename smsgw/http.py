"""What every HTTP SMS backend shares: one aiohttp session, bounded concurrency, and the
mapping of HTTP answers to ``SendResult``.

Theory of operation
-------------------
A backend built on ``HttpBackend`` owns one ``aiohttp.ClientSession`` (opened in ``start``,
closed in ``stop``) and makes one HTTP request per ``OutgoingSms``, at most ``concurrency`` at a
time, each bounded by ``timeout`` seconds. Building a request (``_request``) and reading a reply
(``_result``) are plain functions of values; only ``HttpBackend._call`` does I/O, and it turns
every transport error (refused, reset, timed out) into ``retry``: the backend never re-sends on
its own, the queue decides (DESIGN.md §6 smsgw).

Replies map to results the same way for every provider (``http_result``): throttled (HTTP 429)
and server errors are ``retry``, honouring ``Retry-After`` when given; 401 and 403 are
``failed`` with "bad credentials". Provider messages can quote the number they refused, so every
run of 7 or more digits, however written (``+7 (701) 234-56-78``), is scrubbed from them
(``scrub``), and log lines name a recipient only by ``OutgoingSms.ref[:12]``.

The providers themselves live in ``smsgw.providers`` (Twilio, Vonage, Infobip, the Android
gateway app) and ``smsgw.generic`` (a templated request); their webhooks in ``smsgw.webhooks``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from smsgw.backend import InboundHandler, OutgoingSms, ReceiptHandler, SendResult
from smsgw.errors import SmsError
from smsgw.scrub import scrub_numbers

log = logging.getLogger("smsgw.http")

RETRY_DELAY = 30.0
"""Seconds to wait after a throttle or server error that named no ``Retry-After``."""
MAX_RETRY_AFTER = 3600.0
BAD_CREDENTIALS = "bad credentials"
PROVIDER_ID = re.compile(r"[0-9A-Za-z._:-]{1,128}")
"""What a provider's message id may look like; anything else is refused."""


class ProviderError(SmsError):
    """An HTTP provider backend configured or used wrongly (not started, bad URL or template)."""


def scrub(text: str) -> str:
    """``text`` with every phone number in it masked (``scrub_numbers``), cut to 300
    characters: fit for a log line or an error."""
    return scrub_numbers(text)[:300]


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
    """One HTTP request to a provider: ``path`` is appended to the backend's base URL."""

    path: str
    form: dict[str, str] | None = field(default=None, repr=False)
    json: Any = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    method: str = "POST"
    data: bytes | None = field(default=None, repr=False)
    """A body already encoded (its ``Content-Type`` is then in ``headers``)."""


class HttpBackend:
    """The I/O every provider shares: a session, a concurrency limit, transport errors."""

    name = "http"

    def __init__(self, base_url: str, *, concurrency: int = 4, timeout: float = 15.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ProviderError(
                f"{self.name}: base_url must start with http:// or https://, got {base_url!r}"
            )
        if concurrency < 1 or timeout <= 0:
            raise ProviderError(f"{self.name}: concurrency and timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None
        self._on_receipt: ReceiptHandler | None = None
        self._on_inbound: InboundHandler | None = None

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        """Open the session; receipts and inbound SMS come through webhook routes, if any."""
        self._on_receipt, self._on_inbound = on_receipt, on_inbound
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
        self._on_receipt = self._on_inbound = None

    async def _send_one(self, sms: OutgoingSms) -> SendResult:
        assert self._session is not None and self._limit is not None
        async with self._limit:
            result = await self._call(self._session, sms)
        if result.status != "accepted":
            # The error is scrubbed again here, whole: a provider's parts of it were scrubbed
            # one by one (or not at all, like Twilio's code) when the result was made.
            error = scrub(result.error) if result.error else result.error
            log.warning("%s: ref=%s %s: %s", self.name, sms.ref[:12], result.status, error)
        return result

    async def _call(self, session: aiohttp.ClientSession, sms: OutgoingSms) -> SendResult:
        req = self._request(sms)
        try:
            async with session.request(
                req.method,
                self.base_url + req.path,
                data=req.form if req.data is None else req.data,
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
