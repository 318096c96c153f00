"""smsgw.webhooks: request headers as raw bytes. aiohttp hands a header that is not UTF-8
(``X-Timestamp: \\xff``) to the handler as lone surrogates; a signature check must refuse it
like any wrong signature (403), never fail with a 500. aiohttp's client will not send such
bytes, so these tests speak HTTP/1.1 over a plain socket on 127.0.0.1 (``raw_request``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.backend import Inbound, Receipt
from smsgw.webhooks import (
    Handler,
    WebhookServer,
    android_webhook_route,
    infobip_report_route,
    serve_webhooks,
    twilio_inbound_route,
    twilio_status_route,
    vonage_receipt_route,
)
from tests.smsgw.fakeproviders import (
    ANDROID_WEBHOOK_KEY,
    TWILIO_TOKEN,
    android_event,
    sign_twilio,
)
from tests.smsgw.httphelpers import CALLBACK, NUMBER

INBOUND = "https://gw.example.org/sms/twilio/inbound"
Headers = Sequence[tuple[bytes, bytes]]


async def raw_request(
    url: str, target: bytes, headers: Headers = (), body: bytes = b"", method: bytes = b"POST"
) -> tuple[int, bytes]:
    """Send one request, bytes as given, to the server at ``url`` (``http://127.0.0.1:PORT``);
    the status and body of its answer. Raises if the server closes without answering."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            method + b" " + target + b" HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Connection: close",
            b"Content-Length: %d" % len(body),
            *(name + b": " + value for name, value in headers),
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 30)  # Connection: close, so until EOF
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, content = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    assert len(status) >= 2 and status[0].startswith(b"HTTP/1."), reply[:200]
    return int(status[1]), content


@contextlib.asynccontextmanager
async def served(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """``routes`` served by ``serve_webhooks`` (as the application does); yields the URL."""
    server = await serve_webhooks(routes)
    try:
        yield server.url
    finally:
        await server.close()


def signed_android(body: bytes, stamp: bytes) -> list[tuple[bytes, bytes]]:
    """Headers as the app signs: HMAC-SHA256 of the body then the timestamp's bytes."""
    digest = hmac.new(ANDROID_WEBHOOK_KEY.encode(), body + stamp, hashlib.sha256).hexdigest()
    return [
        (b"Content-Type", b"application/json"),
        (b"X-Timestamp", stamp),
        (b"X-Signature", digest.encode()),
    ]


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None and record.levelno < logging.ERROR, record.getMessage()


# Examples the audit found ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_android_header_bytes_that_are_not_utf8_are_403_not_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbound: list[Inbound] = []
    route = android_webhook_route(ANDROID_WEBHOOK_KEY, lambda r: None, inbound.append)
    body = android_event("sms:received", {"message": "STOP", "phoneNumber": NUMBER})
    stamp = str(int(time.time())).encode()
    good = signed_android(body, stamp)
    async with served({"/a": route}) as url:
        assert (await raw_request(url, b"/a", good, body))[0] == 204
        bad_stamp = [good[0], (b"X-Timestamp", b"\xff"), good[2]]
        status, reason = await raw_request(url, b"/a", bad_stamp, body)
        assert status == 403 and b"X-Signature" in reason
        # The signature is right for the bytes sent, but they are not a timestamp.
        assert (await raw_request(url, b"/a", signed_android(body, b"\xff"), body))[0] == 403
        assert (await raw_request(url, b"/a", signed_android(body, b"1\xc3"), body))[0] == 403
        bad_signature = [good[0], good[1], (b"X-Signature", b"\xff" * 64)]
        assert (await raw_request(url, b"/a", bad_signature, body))[0] == 403
        # A signed timestamp too long for int() or for a float is refused, not a 500.
        for digits in (400, 5000):
            assert (await raw_request(url, b"/a", signed_android(body, b"9" * digits), body))[
                0
            ] == 403
        assert (await raw_request(url, b"/a", good, body))[0] == 204  # still serving
    assert inbound == [Inbound(NUMBER, "STOP"), Inbound(NUMBER, "STOP")]
    no_traceback(caplog)


@pytest.mark.asyncio
async def test_twilio_and_vonage_header_bytes_that_are_not_utf8_are_4xx(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receipts: list[Receipt] = []
    routes = {
        "/twilio": twilio_status_route(TWILIO_TOKEN, CALLBACK, receipts.append),
        "/vonage": vonage_receipt_route(receipts.append),
    }
    form = {"MessageSid": "SMabc", "MessageStatus": "delivered"}
    body = b"MessageSid=SMabc&MessageStatus=delivered"
    signature = sign_twilio(TWILIO_TOKEN, CALLBACK, form).encode()
    content = (b"Content-Type", b"application/x-www-form-urlencoded")
    async with served(routes) as url:
        for given in (b"\xff", signature[:-2] + b"\xc3\xff", b"\xed\xa0\x80"):
            headers = [content, (b"X-Twilio-Signature", given)]
            assert (await raw_request(url, b"/twilio", headers, body))[0] == 403
        headers = [(b"Content-Type", b"\xff"), (b"X-Twilio-Signature", signature)]
        assert (await raw_request(url, b"/twilio", headers, body))[0] == 415
        odd_type = [(b"Content-Type", b"\xff/\xfe")]
        assert (await raw_request(url, b"/vonage", odd_type, b"x"))[0] == 415
        for query in (b"messageId=\xff&status=delivered", b"messageId=%FF&status=%ED%A0%80"):
            assert (await raw_request(url, b"/vonage?" + query, method=b"GET"))[0] == 400
        assert (
            await raw_request(url, b"/twilio", [content, (b"X-Twilio-Signature", signature)], body)
        )[0] == 204
    assert receipts == [Receipt("smabc", "delivered")]
    no_traceback(caplog)


@pytest.mark.asyncio
async def test_a_body_that_does_not_decode_is_400_in_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Content-Encoding: gzip`` on a body that is not gzip: ``request.read()`` raises, which
    aiohttp answered 500 (and logged twice with tracebacks)."""
    receipts: list[Receipt] = []
    routes = {
        "/android": android_webhook_route(ANDROID_WEBHOOK_KEY, receipts.append, receipts.append),
        "/vonage": vonage_receipt_route(receipts.append),
        "/infobip": infobip_report_route(receipts.append),
        "/twilio": twilio_status_route(TWILIO_TOKEN, CALLBACK, receipts.append),
    }
    kinds = {"/twilio": b"application/x-www-form-urlencoded"}
    with caplog.at_level(logging.WARNING):
        async with served(routes) as url:
            for route in routes:
                for coding in (b"gzip", b"deflate"):
                    kind = kinds.get(route, b"application/json")
                    headers = [(b"Content-Type", kind), (b"Content-Encoding", coding)]
                    status, _ = await raw_request(url, route.encode(), headers, b"garbage")
                    assert status == 400, (route, coding)
    assert receipts == []
    no_traceback(caplog)
    assert any("malformed HTTP request" in r.getMessage() for r in caplog.records)


# Fuzz: one event loop and one server for all the examples ---------------------------------


class RawWebhooks:
    """Every webhook route served by ``serve_webhooks`` on 127.0.0.1 from a private loop."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[Inbound] = []
        self.runner = asyncio.Runner()
        routes = {
            "/twilio": twilio_status_route(TWILIO_TOKEN, CALLBACK, self.receipts.append),
            "/twilio-in": twilio_inbound_route(TWILIO_TOKEN, INBOUND, self.inbound.append),
            "/vonage": vonage_receipt_route(self.receipts.append),
            "/infobip": infobip_report_route(self.receipts.append),
            "/android": android_webhook_route(
                ANDROID_WEBHOOK_KEY, self.receipts.append, self.inbound.append
            ),
        }
        self.server: WebhookServer = self.runner.run(serve_webhooks(routes))
        self.url = self.server.url

    def request(self, target: bytes, headers: Headers, body: bytes, method: bytes = b"POST") -> int:
        return self.runner.run(raw_request(self.url, target, headers, body, method))[0]

    def close(self) -> None:
        self.runner.run(self.server.close())
        self.runner.close()


@pytest.fixture(scope="module")
def raw_webhooks() -> Iterator[RawWebhooks]:
    hooks = RawWebhooks()
    try:
        yield hooks
    finally:
        hooks.close()


FUZZ = settings(max_examples=200, deadline=None)
# Header values: any bytes but CR and LF (which would end the header), often not UTF-8.
header_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
HEADER_NAMES = [
    b"X-Timestamp",
    b"X-Signature",
    b"X-Twilio-Signature",
    b"Content-Type",
    b"Content-Encoding",
    b"Transfer-Encoding",
]
SPECIAL = [b"\xff", b"\xed\xa0\x80", b"gzip", b"deflate", b"br", b"chunked", b"application/json"]
ROUTES = [b"/twilio", b"/twilio-in", b"/vonage", b"/infobip", b"/android"]
ANDROID_BODY = android_event("sms:delivered", {"messageId": "abc123"})


def check_still_serving(hooks: RawWebhooks) -> None:
    stamp = str(int(time.time())).encode()
    assert hooks.request(b"/android", signed_android(ANDROID_BODY, stamp), ANDROID_BODY) == 204


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    headers=st.lists(
        st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(SPECIAL) | header_bytes),
        max_size=4,
    ),
    body=st.sampled_from([ANDROID_BODY, b"MessageSid=SMabc&MessageStatus=delivered", b""])
    | st.binary(max_size=64),
    query=st.none() | header_bytes.map(lambda b: b.replace(b" ", b"")),
)
def test_fuzz_header_bytes_never_give_a_500(
    raw_webhooks: RawWebhooks,
    route: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    query: bytes | None,
) -> None:
    target, method = (route, b"POST") if query is None else (route + b"?" + query, b"GET")
    status = raw_webhooks.request(target, headers, body, method)
    assert status < 500
    check_still_serving(raw_webhooks)


@FUZZ
@given(
    stamp=header_bytes
    | st.integers(-(10**30), 10**30).map(lambda n: str(n).encode())
    | st.just(b"now"),
    sign=st.booleans(),
    body=st.sampled_from([ANDROID_BODY, b"{}", b"null"]) | st.binary(max_size=32),
)
def test_fuzz_android_timestamp_and_signature(
    raw_webhooks: RawWebhooks, stamp: bytes, sign: bool, body: bytes
) -> None:
    if stamp == b"now":
        stamp = str(int(time.time())).encode()
    headers = signed_android(body, stamp)
    if not sign:
        headers[2] = (b"X-Signature", hashlib.sha256(stamp).hexdigest().encode())
    status = raw_webhooks.request(b"/android", headers, body)
    assert status < 500
    fresh = stamp.isdigit() and abs(int(stamp) - time.time()) <= 300
    if any(b < 0x20 and b != 0x09 or b == 0x7F for b in stamp):
        assert status == 400  # aiohttp's HTTP parser refuses control bytes in a header
    elif not (sign and fresh):
        assert status == 403
    check_still_serving(raw_webhooks)


def test_fuzz_left_no_traceback_in_the_log(
    raw_webhooks: RawWebhooks, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for value in (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x7f"):
            for route in ROUTES:
                for name in HEADER_NAMES[:4]:
                    assert raw_webhooks.request(route, [(name, value)], b"{}") < 500
            assert raw_webhooks.request(b"/vonage?status=" + value, [], b"", b"GET") < 500
        check_still_serving(raw_webhooks)
    no_traceback(caplog)
