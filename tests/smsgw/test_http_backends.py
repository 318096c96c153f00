"""smsgw.http: provider backends sending to fake providers on 127.0.0.1; make_backend."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kopir.config import (
    AndroidConfig,
    HttpSmsConfig,
    InfobipConfig,
    SmsConfig,
    TwilioConfig,
    VonageConfig,
)
from smsgw.backend import OutgoingSms, Receipt, SendResult
from smsgw.backends import BackendConfigError, make_backend
from smsgw.generic import GenericHttpBackend
from smsgw.http import ProviderError, retry_after, scrub
from smsgw.providers import (
    AndroidGatewayBackend,
    SlidingWindow,
    TwilioBackend,
    VonageBackend,
)
from tests.smsgw.fakeproviders import (
    ANDROID_PASSWORD,
    ANDROID_USER,
    INFOBIP_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_SECRET,
    FakeProviders,
    basic_credentials,
    running_providers,
)
from tests.smsgw.httphelpers import CALLBACK, NUMBER, AnyBackend, make

TEXT = "Прокси: https://t.me/proxy?server=relay.example.kz&port=443"


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
