"""smsgw.http: the HTTP provider backends against fake providers on 127.0.0.1, and their
webhook routes (signatures, strict validation, hypothesis fuzz: never a 500)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kopir.config import (
    AndroidConfig,
    HttpSmsConfig,
    InfobipConfig,
    SmsConfig,
    TwilioConfig,
    VonageConfig,
)
from smsgw.backend import Inbound, OutgoingSms, Receipt, SendResult
from smsgw.backends import BackendConfigError, make_backend, webhook_routes
from smsgw.errors import SmsError
from smsgw.generic import GenericHttpBackend
from smsgw.http import ProviderError, retry_after, scrub
from smsgw.providers import (
    AndroidGatewayBackend,
    InfobipBackend,
    SlidingWindow,
    TwilioBackend,
    VonageBackend,
)
from smsgw.webhooks import (
    ANDROID_PATH,
    INFOBIP_PATH,
    TWILIO_INBOUND_PATH,
    TWILIO_STATUS_PATH,
    VONAGE_PATH,
    android_signature,
    android_webhook_route,
    infobip_report_route,
    serve_webhooks,
    twilio_inbound_route,
    twilio_signature,
    twilio_status_route,
    vonage_receipt_route,
)
from tests.smsgw.fakeproviders import (
    ANDROID_PASSWORD,
    ANDROID_USER,
    ANDROID_WEBHOOK_KEY,
    INFOBIP_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
    FakeProviders,
    android_event,
    basic_credentials,
    post_android,
    running_providers,
    serve,
    sign_android,
    sign_twilio,
)
from tests.strategies import mutated

NUMBER = "+77012345678"
TEXT = "Прокси: https://t.me/proxy?server=relay.example.kz&port=443"
CALLBACK = "https://gw.example.org/twilio/status?site=kz"
INBOUND = "https://gw.example.org/sms/twilio/inbound"


def sms(message_id: int = 1, text: str = TEXT, data_coding: int = 8) -> OutgoingSms:
    return OutgoingSms(
        message_id=message_id,
        to=NUMBER,
        ref="ref0123456789abcdef",
        short_message=text.encode("utf-16-be"),
        esm_class=0,
        data_coding=data_coding,
        text=text,
    )


@pytest_asyncio.fixture
async def providers() -> AsyncIterator[FakeProviders]:
    async with running_providers() as fake:
        yield fake


AnyBackend = TwilioBackend | VonageBackend | InfobipBackend | AndroidGatewayBackend


def make(kind: str, url: str, *, good: bool = True, **extra: Any) -> AnyBackend:
    wrong = "" if good else "-wrong"
    if kind == "twilio":
        return TwilioBackend(
            url, TWILIO_SID, TWILIO_TOKEN + wrong, from_="Kopir", status_callback=CALLBACK
        )
    if kind == "vonage":
        return VonageBackend(url, VONAGE_KEY, VONAGE_SECRET + wrong, from_="Kopir")
    if kind == "infobip":
        return InfobipBackend(url, INFOBIP_KEY + wrong, from_="Kopir")
    return AndroidGatewayBackend(url, ANDROID_USER, ANDROID_PASSWORD + wrong, **extra)


async def send_one(backend: AnyBackend, message: OutgoingSms | None = None) -> SendResult:
    receipts: list[Receipt] = []
    await backend.start(receipts.append, lambda inbound: None)
    try:
        [result] = await backend.send([message or sms()])
    finally:
        await backend.stop()
    return result


KINDS = ["twilio", "vonage", "infobip", "android"]


# Sending -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_twilio_success_sends_the_documented_form(providers: FakeProviders) -> None:
    result = await send_one(make("twilio", providers.url))
    assert result == SendResult(1, "accepted", f"sm{1:032x}")
    [req] = providers.requests
    assert req.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert req.form == {"To": NUMBER, "From": "Kopir", "Body": TEXT, "StatusCallback": CALLBACK}
    assert basic_credentials(req.headers["Authorization"]) == (TWILIO_SID, TWILIO_TOKEN)


@pytest.mark.asyncio
async def test_twilio_messaging_service_instead_of_from(providers: FakeProviders) -> None:
    backend = TwilioBackend(
        providers.url, TWILIO_SID, TWILIO_TOKEN, messaging_service_sid="MG" + "1" * 32
    )
    assert (await send_one(backend)).status == "accepted"
    assert providers.requests[0].form == {
        "To": NUMBER,
        "Body": TEXT,
        "MessagingServiceSid": "MG" + "1" * 32,
    }
    with pytest.raises(ProviderError, match="exactly one"):
        TwilioBackend(providers.url, TWILIO_SID, TWILIO_TOKEN)


@pytest.mark.asyncio
async def test_vonage_success_sends_the_documented_form(providers: FakeProviders) -> None:
    result = await send_one(make("vonage", providers.url))
    assert result == SendResult(1, "accepted", f"a{1:014x}")
    assert providers.requests[0].form == {
        "api_key": VONAGE_KEY,
        "api_secret": VONAGE_SECRET,
        "from": "Kopir",
        "to": NUMBER[1:],
        "text": TEXT,
        "type": "unicode",
    }
    await send_one(make("vonage", providers.url), sms(2, "Proxy: t.me/proxy", data_coding=0))
    assert providers.requests[1].form is not None
    assert providers.requests[1].form["type"] == "text"


@pytest.mark.asyncio
async def test_infobip_success_sends_the_documented_json(providers: FakeProviders) -> None:
    result = await send_one(make("infobip", providers.url))
    assert result == SendResult(1, "accepted", "ib-1")
    [req] = providers.requests
    assert req.headers["Authorization"] == f"App {INFOBIP_KEY}"
    assert req.json == {
        "messages": [{"from": "Kopir", "destinations": [{"to": NUMBER}], "text": TEXT}]
    }


@pytest.mark.asyncio
async def test_android_success_sends_the_documented_json(providers: FakeProviders) -> None:
    result = await send_one(make("android", providers.url))
    assert result == SendResult(1, "accepted", "msg00001x")
    [req] = providers.requests
    assert req.path == "/message"
    assert req.json == {"message": TEXT, "phoneNumbers": [NUMBER]}
    assert basic_credentials(req.headers["Authorization"]) == (ANDROID_USER, ANDROID_PASSWORD)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_throttled_is_retry(providers: FakeProviders, kind: str) -> None:
    providers.respond("throttled")
    result = await send_one(make(kind, providers.url))
    assert result.status == "retry"
    assert result.error is not None and "throttled" in result.error.lower()
    if kind != "vonage":  # Vonage throttles in the body, with no Retry-After
        assert result.retry_after == 7.0


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_bad_credentials_fail_clearly(providers: FakeProviders, kind: str) -> None:
    result = await send_one(make(kind, providers.url, good=False))
    assert result.status == "failed"
    assert result.error == f"{kind}: bad credentials"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_server_errors_and_refused_connections_are_retry(
    providers: FakeProviders, kind: str
) -> None:
    providers.respond("server_error")
    assert (await send_one(make(kind, providers.url))).status == "retry"
    url = providers.url
    await providers.close()
    result = await send_one(make(kind, url))
    assert result.status == "retry"
    assert result.error == f"{kind}: ClientConnectorError"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_refusals_are_failed_without_the_number(
    providers: FakeProviders, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    providers.respond("invalid")
    result = await send_one(make(kind, providers.url))
    assert result.status == "failed"
    assert result.error is not None and "[number]" in result.error
    assert "7012345678" not in result.error
    assert "7012345678" not in caplog.text
    assert "ref=ref012345678 failed" in caplog.text


@pytest.mark.asyncio
async def test_batches_run_concurrently_but_bounded(providers: FakeProviders) -> None:
    backend = VonageBackend(providers.url, VONAGE_KEY, VONAGE_SECRET, "Kopir", concurrency=2)
    await backend.start(lambda r: None, lambda i: None)
    try:
        providers.respond("ok", "throttled")
        providers.delay = 0.05
        results = await backend.send([sms(i) for i in range(1, 6)])
    finally:
        await backend.stop()
    assert sorted(r.message_id for r in results) == [1, 2, 3, 4, 5]
    assert sorted(r.status for r in results) == ["accepted"] * 4 + ["retry"]
    assert providers.most_in_flight == 2


@pytest.mark.asyncio
async def test_vonage_quota_is_failed(providers: FakeProviders) -> None:
    providers.respond("quota")
    result = await send_one(make("vonage", providers.url))
    assert result == SendResult(1, "failed", error="vonage: quota exceeded")


@pytest.mark.asyncio
async def test_send_before_start_is_an_error() -> None:
    with pytest.raises(ProviderError, match="not started"):
        await make("twilio", "http://127.0.0.1:9").send([sms()])


def test_secrets_stay_out_of_repr() -> None:
    url = "http://127.0.0.1:9"
    for kind in KINDS:
        text = repr(make(kind, url))
        for secret in (TWILIO_TOKEN, VONAGE_SECRET, INFOBIP_KEY, ANDROID_PASSWORD):
            assert secret not in text


# The Android window ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_android_31st_message_in_the_window_is_retry(providers: FakeProviders) -> None:
    now = [1000.0]
    backend = make("android", providers.url, clock=lambda: now[0])
    await backend.start(lambda r: None, lambda i: None)
    try:
        first = await backend.send([sms(i) for i in range(1, 31)])
        assert [r.status for r in first] == ["accepted"] * 30
        now[0] += 600.0
        [extra] = await backend.send([sms(31)])
        assert extra.status == "retry"
        assert extra.retry_after == pytest.approx(1200.0)
        assert len(providers.requests) == 30
        now[0] = 1000.0 + 1800.0
        [later] = await backend.send([sms(32)])
        assert later.status == "accepted"
    finally:
        await backend.stop()


def test_sliding_window_frees_slots_as_they_age() -> None:
    window = SlidingWindow(2, 10.0)
    assert window.delay(0.0) == 0.0
    window.take(0.0)
    window.take(4.0)
    assert window.delay(5.0) == 5.0
    assert window.delay(10.0) == 0.0
    window.give_back(4.0)
    assert window.delay(5.0) == 0.0


def test_retry_after_and_scrub() -> None:
    assert retry_after("12") == 12.0
    assert retry_after(None) == 30.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 30.0
    assert retry_after("nan") == 30.0
    assert retry_after("-5") == 0.0
    assert retry_after("1e9") == 3600.0
    assert scrub("to +7 701 234-56-78 failed, code 21211") == "to [number] failed, code 21211"


# Webhooks ----------------------------------------------------------------------------------


def test_twilio_signature_matches_an_independent_signer() -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": NUMBER, "Body": "a b"}
    assert twilio_signature(TWILIO_TOKEN, CALLBACK, list(params.items())) == sign_twilio(
        TWILIO_TOKEN, CALLBACK, params
    )


async def post_form(
    session: aiohttp.ClientSession, url: str, form: dict[str, str], signature: str | None
) -> int:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with session.post(url, data=form, headers=headers) as resp:
        return resp.status


@pytest.mark.asyncio
async def test_twilio_callback_with_good_signature_is_recorded() -> None:
    receipts: list[Receipt] = []
    route = twilio_status_route(TWILIO_TOKEN, CALLBACK, receipts.append)
    form = {"MessageSid": f"SM{1:032x}", "MessageStatus": "delivered", "AccountSid": TWILIO_SID}
    async with serve({"/twilio": route}) as url, aiohttp.ClientSession() as session:
        status = await post_form(
            session, url + "/twilio", form, sign_twilio(TWILIO_TOKEN, CALLBACK, form)
        )
        assert status == 204
        assert receipts == [Receipt(f"sm{1:032x}", "delivered")]
        form = {"MessageSid": "SMabc", "MessageStatus": "undelivered", "ErrorCode": "30003"}
        status = await post_form(
            session, url + "/twilio", form, sign_twilio(TWILIO_TOKEN, CALLBACK, form)
        )
        assert status == 204
        assert receipts[1] == Receipt("smabc", "failed", "twilio error code 30003")
        form = {"MessageSid": "SMabc", "MessageStatus": "sent"}
        status = await post_form(
            session, url + "/twilio", form, sign_twilio(TWILIO_TOKEN, CALLBACK, form)
        )
        assert status == 204
        assert len(receipts) == 2


@pytest.mark.asyncio
async def test_twilio_forged_or_unsigned_callback_is_403() -> None:
    receipts: list[Receipt] = []
    route = twilio_status_route(TWILIO_TOKEN, CALLBACK, receipts.append)
    form = {"MessageSid": "SMabc", "MessageStatus": "delivered"}
    forged = [
        None,
        "",
        sign_twilio("another-token", CALLBACK, form),
        sign_twilio(TWILIO_TOKEN, "https://evil.example/", form),
        sign_twilio(TWILIO_TOKEN, CALLBACK, {**form, "MessageStatus": "failed"}),
        "Ω" * 28,
    ]
    async with serve({"/twilio": route}) as url, aiohttp.ClientSession() as session:
        for signature in forged:
            assert await post_form(session, url + "/twilio", form, signature) == 403
    assert receipts == []


@pytest.mark.asyncio
async def test_vonage_receipts_as_query_form_and_json() -> None:
    receipts: list[Receipt] = []
    route = vonage_receipt_route(receipts.append)
    async with serve({"/vonage": route}) as url, aiohttp.ClientSession() as session:
        query = {"messageId": "0A0000000123ABCD1", "status": "delivered", "err-code": "0"}
        async with session.get(url + "/vonage", params=query) as resp:
            assert resp.status == 204
        form = {"messageId": "0A01", "status": "expired", "err-code": "5"}
        async with session.post(url + "/vonage", data=form) as resp:
            assert resp.status == 204
        async with session.post(
            url + "/vonage", json={"messageId": "0A02", "status": "rejected"}
        ) as resp:
            assert resp.status == 204
        async with session.post(
            url + "/vonage", json={"messageId": "0A03", "status": "buffered"}
        ) as resp:
            assert resp.status == 204
        async with session.post(
            url + "/vonage", json={"messageId": "0A04", "status": "sent!"}
        ) as resp:
            assert resp.status == 400
            assert "status" in await resp.text()
    assert receipts == [
        Receipt("a0000000123abcd1", "delivered"),
        Receipt("a01", "expired", "vonage err-code 5"),
        Receipt("a02", "failed"),
    ]


@pytest.mark.asyncio
async def test_infobip_reports_are_taken_whole_or_not_at_all() -> None:
    receipts: list[Receipt] = []
    route = infobip_report_route(receipts.append)
    good = {
        "results": [
            {"messageId": "ib-1", "status": {"groupId": 3, "name": "DELIVERED_TO_HANDSET"}},
            {"messageId": "ib-2", "status": {"groupId": 4}},
            {"messageId": "ib-3", "status": {"groupId": 1}},
            {"messageId": "ib-4", "status": {"groupId": 2}},
        ]
    }
    bad = {"results": [{"messageId": "ib-5", "status": {"groupId": 3}}, {"messageId": "ib-6"}]}
    async with serve({"/infobip": route}) as url, aiohttp.ClientSession() as session:
        async with session.post(url + "/infobip", json=good) as resp:
            assert resp.status == 204
        async with session.post(url + "/infobip", json=bad) as resp:
            assert resp.status == 400
    assert receipts == [
        Receipt("ib-1", "delivered"),
        Receipt("ib-2", "expired", "infobip status group 4"),
        Receipt("ib-4", "failed", "infobip status group 2"),
    ]


@pytest.mark.asyncio
async def test_twilio_inbound_sms_with_good_signature_reaches_on_inbound() -> None:
    inbound: list[Inbound] = []
    route = twilio_inbound_route(TWILIO_TOKEN, INBOUND, inbound.append)
    form = {"MessageSid": "SM1", "From": NUMBER, "To": "+15005550006", "Body": "СТОП"}
    async with serve({"/in": route}) as url, aiohttp.ClientSession() as session:
        headers = {"X-Twilio-Signature": sign_twilio(TWILIO_TOKEN, INBOUND, form)}
        async with session.post(url + "/in", data=form, headers=headers) as resp:
            assert resp.status == 200
            assert await resp.text() == "<Response/>"  # no reply from Twilio itself
        forged = {"X-Twilio-Signature": sign_twilio(TWILIO_TOKEN, CALLBACK, form)}
        assert await post_form(session, url + "/in", form, forged["X-Twilio-Signature"]) == 403
        no_sender = {k: v for k, v in form.items() if k != "From"}
        signed = sign_twilio(TWILIO_TOKEN, INBOUND, no_sender)
        assert await post_form(session, url + "/in", no_sender, signed) == 400
    assert inbound == [Inbound(NUMBER, "СТОП")]


def test_android_signature_matches_an_independent_signer() -> None:
    body = android_event("sms:received", {"message": "Сәлем", "phoneNumber": NUMBER})
    assert android_signature(ANDROID_WEBHOOK_KEY, body, "1719046000") == sign_android(
        ANDROID_WEBHOOK_KEY, body, "1719046000"
    )


@pytest.mark.asyncio
async def test_android_webhooks_inbound_and_status() -> None:
    receipts: list[Receipt] = []
    inbound: list[Inbound] = []
    route = android_webhook_route(ANDROID_WEBHOOK_KEY, receipts.append, inbound.append)
    received = {
        "messageId": "abc123",
        "message": "PROXY",
        "phoneNumber": NUMBER,
        "simNumber": None,
        "receivedAt": "2024-06-22T15:46:11.000+07:00",
    }
    async with serve({"/a": route}) as url:
        assert await post_android(url + "/a", android_event("sms:received", received)) == 204
        sent = {"messageId": "msg00001x", "phoneNumber": NUMBER, "sentAt": "2024-06-22T15:46:12Z"}
        assert await post_android(url + "/a", android_event("sms:sent", sent)) == 204
        delivered = {**sent, "deliveredAt": "2024-06-22T15:46:13Z"}
        assert await post_android(url + "/a", android_event("sms:delivered", delivered)) == 204
        failed = {"messageId": "MSG2", "reason": f"RESULT_ERROR_GENERIC_FAILURE to {NUMBER}"}
        assert await post_android(url + "/a", android_event("sms:failed", failed)) == 204
        assert await post_android(url + "/a", android_event("sms:nope", sent)) == 400
        assert await post_android(url + "/a", android_event("system:ping", {"health": {}})) == 204
    assert inbound == [Inbound(NUMBER, "PROXY")]
    assert receipts == [
        Receipt("msg00001x", "delivered"),
        Receipt("msg2", "failed", "android: RESULT_ERROR_GENERIC_FAILURE to [number]"),
    ]


@pytest.mark.asyncio
async def test_android_webhooks_unsigned_forged_or_stale_are_403() -> None:
    inbound: list[Inbound] = []
    route = android_webhook_route(ANDROID_WEBHOOK_KEY, lambda r: None, inbound.append)
    body = android_event("sms:received", {"message": "STOP", "phoneNumber": NUMBER})
    async with serve({"/a": route}) as url, aiohttp.ClientSession() as session:
        assert await post_android(url + "/a", body, key="another-key") == 403
        assert await post_android(url + "/a", body, timestamp=time.time() - 3600) == 403
        assert await post_android(url + "/a", body, timestamp=time.time() + 3600) == 403
        async with session.post(url + "/a", data=body) as resp:
            assert resp.status == 403
    assert inbound == []
    with pytest.raises(SmsError, match="webhook_key"):
        android_webhook_route("", lambda r: None, lambda i: None)


@pytest.mark.asyncio
async def test_backend_routes_answer_503_until_started_then_deliver() -> None:
    twilio = TwilioBackend(
        "http://127.0.0.1:9", TWILIO_SID, TWILIO_TOKEN, from_="Kopir",
        status_callback=CALLBACK, inbound_url=INBOUND,
    )  # fmt: skip
    android = AndroidGatewayBackend(
        "http://127.0.0.1:9", ANDROID_USER, ANDROID_PASSWORD, webhook_key=ANDROID_WEBHOOK_KEY
    )
    vonage, infobip = make("vonage", "http://127.0.0.1:9"), make("infobip", "http://127.0.0.1:9")
    assert set(webhook_routes(twilio)) == {TWILIO_STATUS_PATH, TWILIO_INBOUND_PATH}
    assert set(webhook_routes(android)) == {ANDROID_PATH}
    assert set(webhook_routes(vonage)) == {VONAGE_PATH}
    assert set(webhook_routes(infobip)) == {INFOBIP_PATH}
    assert webhook_routes(make("android", "http://127.0.0.1:9")) == {}  # no key, no webhooks
    assert webhook_routes(GenericHttpBackend("http://127.0.0.1:9/x")) == {}

    inbound: list[Inbound] = []
    body = android_event("sms:received", {"message": "HELP", "phoneNumber": NUMBER})
    server = await serve_webhooks(webhook_routes(android))
    try:
        assert await post_android(server.url + ANDROID_PATH, body) == 503
        await android.start(lambda r: None, inbound.append)
        assert await post_android(server.url + ANDROID_PATH, body) == 204
        await android.stop()
        assert await post_android(server.url + ANDROID_PATH, body) == 503
    finally:
        await server.close()
    assert inbound == [Inbound(NUMBER, "HELP")]


# The factory -------------------------------------------------------------------------------


def test_make_backend_builds_each_configured_backend(tmp_path: Path) -> None:
    env = {"TOKEN": TWILIO_TOKEN, "AUTH": "Bearer t"}
    sms = SmsConfig(
        twilio=TwilioConfig(account_sid=TWILIO_SID, auth_token="env:TOKEN", sender="Kopir"),
        vonage=VonageConfig(api_key=VONAGE_KEY, api_secret=VONAGE_SECRET, sender="Kopir"),
        infobip=InfobipConfig(api_key=INFOBIP_KEY, sender="Kopir"),
        android=AndroidConfig(base_url="http://127.0.0.1:8080", password="p", limit=10),
        http=HttpSmsConfig(url="http://127.0.0.1:1/send", headers={"Authorization": "env:AUTH"}),
    )
    kinds = {
        "outbox": "OutboxBackend", "smpp": "SmppBackend", "twilio": "TwilioBackend",
        "vonage": "VonageBackend", "infobip": "InfobipBackend",
        "android": "AndroidGatewayBackend", "http": "GenericHttpBackend",
    }  # fmt: skip
    sms = dataclasses.replace(sms, smpp=dataclasses.replace(sms.smpp, system_id="kopir"))
    for kind, cls in kinds.items():
        backend = make_backend(dataclasses.replace(sms, backend=kind), tmp_path, env)  # type: ignore[arg-type]
        assert type(backend).__name__ == cls
    android = make_backend(dataclasses.replace(sms, backend="android"), tmp_path, env)
    assert isinstance(android, AndroidGatewayBackend)
    assert (android.window.limit, android.window.window) == (10, 1800.0)
    generic = make_backend(dataclasses.replace(sms, backend="http"), tmp_path, env)
    assert (
        isinstance(generic, GenericHttpBackend) and generic.headers["Authorization"] == "Bearer t"
    )


@pytest.mark.parametrize(
    ("sms", "message"),
    [
        (SmsConfig(backend="twilio", twilio=TwilioConfig(account_sid="AC1", auth_token="env:NOPE",
                                                        sender="K")),
         "[sms.twilio] auth_token names $NOPE, which is not set"),
        (SmsConfig(backend="twilio", twilio=TwilioConfig(account_sid="AC1", auth_token="t")),
         "[sms.twilio] set exactly one of sender and messaging_service_sid"),
        (SmsConfig(backend="vonage", vonage=VonageConfig(api_key="k", sender="K")),
         "[sms.vonage] api_secret is empty; the vonage backend needs it"),
        (SmsConfig(backend="infobip", infobip=InfobipConfig(api_key="k", sender="K",
                                                            base_url="api.infobip.com")),
         "[sms.infobip] base_url must start with http:// or https://, got 'api.infobip.com'"),
        (SmsConfig(backend="android"),
         "[sms.android] base_url is empty; the android backend needs it"),
        (SmsConfig(backend="http", http=HttpSmsConfig(url="http://h/x", body="{nope}")),
         "[sms.http] body: unknown placeholder {nope}"),
        (SmsConfig(backend="smpp"), "[sms.smpp] smpp system_id '' must be 1 to 15 characters"),
    ],
)  # fmt: skip
def test_make_backend_names_the_key_and_what_is_wrong(
    tmp_path: Path, sms: SmsConfig, message: str
) -> None:
    with pytest.raises(BackendConfigError) as info:
        make_backend(sms, tmp_path, {})
    assert str(info.value).startswith(message)


# Fuzz: one event loop and one server for all the examples ---------------------------------


class Webhooks:
    """The webhook routes served on 127.0.0.1 from a private event loop."""

    def __init__(self) -> None:
        self.receipts: list[Receipt] = []
        self.inbound: list[Inbound] = []
        self.runner = asyncio.Runner()
        self._serving = serve(
            {
                "/twilio": twilio_status_route(TWILIO_TOKEN, CALLBACK, self.receipts.append),
                "/twilio-in": twilio_inbound_route(TWILIO_TOKEN, INBOUND, self.inbound.append),
                "/vonage": vonage_receipt_route(self.receipts.append),
                "/infobip": infobip_report_route(self.receipts.append),
                "/android": android_webhook_route(
                    ANDROID_WEBHOOK_KEY, self.receipts.append, self.inbound.append
                ),
            }
        )
        self.url = self.runner.run(self._serving.__aenter__())
        self.session = self.runner.run(self._session())

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, list[Receipt]]:
        self.receipts.clear()
        self.inbound.clear()
        return self.runner.run(self._post(path, body, headers)), list(self.receipts)

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        async with self.session.post(self.url + path, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    def close(self) -> None:
        self.runner.run(self.session.close())
        self.runner.run(self._serving.__aexit__(None, None, None))
        self.runner.close()


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()
    try:
        yield hooks
    finally:
        hooks.close()


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
FIELDS = ["MessageSid", "MessageStatus", "ErrorCode", "messageId", "status", "err-code", "To"]
VALUES = ["delivered", "failed", "undelivered", "expired", "sent", "SMabc", "0A01", "7", ""]
fields = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8),
    st.sampled_from(VALUES) | st.text(max_size=12),
    max_size=5,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
INFOBIP_BASE = json.dumps({"results": [{"messageId": "ib-1", "status": {"groupId": 3}}]})
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(status: int, receipts: list[Receipt]) -> None:
    assert status < 500
    if status >= 400:
        assert receipts == []
    for receipt in receipts:
        assert receipt.status in ("delivered", "failed", "expired")
        assert receipt.provider_id


@FUZZ
@given(form=fields, sign=st.booleans(), raw=st.none() | st.binary(max_size=64))
def test_fuzz_twilio_route(
    webhooks: Webhooks, form: dict[str, str], sign: bool, raw: bytes | None
) -> None:
    body = raw if raw is not None else urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": FORM}
    if sign:
        headers["X-Twilio-Signature"] = sign_twilio(TWILIO_TOKEN, CALLBACK, form)
    status, receipts = webhooks.post("/twilio", body, headers)
    check(status, receipts)
    if not sign:
        assert 400 <= status < 500
    if receipts:
        assert (
            raw is None and sign and form["MessageStatus"] in ("delivered", "failed", "undelivered")
        )


@FUZZ
@given(
    form=fields,
    kind=st.sampled_from([FORM, JSON, "text/plain"]),
    raw=st.none()
    | st.binary(max_size=64)
    | mutated('{"messageId": "0A01", "status": "delivered"}', '{}":,'),
)
def test_fuzz_vonage_route(
    webhooks: Webhooks, form: dict[str, str], kind: str, raw: bytes | str | None
) -> None:
    if isinstance(raw, str):
        body, kind = raw.encode(), JSON
    elif raw is not None:
        body = raw
    else:
        body = json.dumps(form).encode() if kind == JSON else urllib.parse.urlencode(form).encode()
    status, receipts = webhooks.post("/vonage", body, {"Content-Type": kind})
    check(status, receipts)


@FUZZ
@given(body=json_values.map(json.dumps) | mutated(INFOBIP_BASE, '{}[]":,0123456789'))
def test_fuzz_infobip_route(webhooks: Webhooks, body: str) -> None:
    status, receipts = webhooks.post("/infobip", body.encode(), {"Content-Type": JSON})
    check(status, receipts)


ANDROID_BASE = android_event("sms:received", {"message": "STOP", "phoneNumber": NUMBER}).decode()
ANDROID_EVENTS = ["sms:received", "sms:sent", "sms:delivered", "sms:failed", "system:ping", "x"]
ANDROID_FIELDS = ["message", "phoneNumber", "messageId", "reason", "simNumber"]


def android_headers(body: bytes, sign: bool) -> dict[str, str]:
    stamp = str(int(time.time()))
    headers = {"Content-Type": JSON, "X-Timestamp": stamp}
    if sign:
        headers["X-Signature"] = sign_android(ANDROID_WEBHOOK_KEY, body, stamp)
    return headers


@FUZZ
@given(
    body=json_values.map(json.dumps)
    | mutated(ANDROID_BASE, '{}[]":,')
    | st.builds(
        lambda event, payload: json.dumps({"event": event, "payload": payload}),
        st.sampled_from(ANDROID_EVENTS) | st.text(max_size=12),
        st.dictionaries(st.sampled_from(ANDROID_FIELDS) | st.text(max_size=6), json_values),
    ),
    sign=st.booleans(),
)
def test_fuzz_android_route(webhooks: Webhooks, body: str, sign: bool) -> None:
    raw = body.encode("utf-8", "surrogatepass")
    status, receipts = webhooks.post("/android", raw, android_headers(raw, sign))
    check(status, receipts)
    if not sign:
        assert status == 403
    if status >= 400:
        assert webhooks.inbound == []
    for message in webhooks.inbound:
        assert status == 204 and isinstance(message.text, str) and message.sender
        assert json.loads(raw)["event"] == "sms:received"


@FUZZ
@given(form=fields, extra=st.dictionaries(st.sampled_from(["From", "Body"]), st.text(max_size=20)))
def test_fuzz_twilio_inbound_route(
    webhooks: Webhooks, form: dict[str, str], extra: dict[str, str]
) -> None:
    form = {**form, **extra}
    body = urllib.parse.urlencode(form).encode()
    headers = {"Content-Type": FORM, "X-Twilio-Signature": sign_twilio(TWILIO_TOKEN, INBOUND, form)}
    status, _ = webhooks.post("/twilio-in", body, headers)
    assert status < 500
    if webhooks.inbound:
        assert status == 200
        assert webhooks.inbound == [Inbound(form["From"], form["Body"])]
