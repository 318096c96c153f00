"""smsgw.generic: the templated ``http`` backend. Templates render safely (JSON, form and URL
escaping, never evaluated; unknown placeholders refused), replies map to results, and the
backend works against a made-up provider on 127.0.0.1, with the worker's backoff."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.backend import OutgoingSms, SendResult
from smsgw.generic import (
    PLACEHOLDERS,
    GenericHttpBackend,
    compile_template,
    find_id,
    generic_result,
    split_url,
)
from smsgw.http import PROVIDER_ID, ProviderError
from smsgw.numbers import create_key_file
from smsgw.queue import Queue, State
from smsgw.segment import segment
from smsgw.worker import Worker, enqueue
from tests.smsgw.fakeproviders import GENERIC_TOKEN, FakeProviders, running_providers
from tests.strategies import mutated

NUMBER = "+77012345678"
NASTY = 'He said "hi" \\ & = + ? # / % {to} \n\t ё 😀 <b>'
JSON_BODY = '{"to": {to}, "text": "Msg: {text}", "ref": {id}, "meta": {"coding": "{encoding}"}}'
AUTH = {"Authorization": f"Bearer {GENERIC_TOKEN}"}
NO_ID = "http: HTTP 200 but no message id at '{}' in the reply"


def values(text: str = NASTY) -> dict[str, str]:
    return {"to": NUMBER, "to_digits": NUMBER[1:], "text": text, "id": "42", "encoding": "ucs2"}


def sms(message_id: int = 1, text: str = NASTY, data_coding: int = 8) -> OutgoingSms:
    return OutgoingSms(message_id, NUMBER, "ref0123456789abcdef", b"", 0, data_coding, text)


# Templates --------------------------------------------------------------------------------


def test_json_body_renders_any_text_exactly() -> None:
    rendered = compile_template(JSON_BODY, "json", "body").render(values())
    assert json.loads(rendered) == {
        "to": NUMBER,
        "text": "Msg: " + NASTY,
        "ref": "42",
        "meta": {"coding": "ucs2"},
    }


def test_form_body_round_trips() -> None:
    template = compile_template("to={to_digits}&text={text}&from=Kopir", "form", "body")
    fields = urllib.parse.parse_qs(template.render(values()), strict_parsing=True)
    assert fields == {"to": [NUMBER[1:]], "text": [NASTY], "from": ["Kopir"]}


def test_url_placeholders_are_percent_encoded_and_never_choose_the_host() -> None:
    base, path = split_url("https://sms.example:8443/v1/send?to={to}&text={text}", "url")
    assert base == "https://sms.example:8443"
    rendered = path.render(values("../admin?x=1#frag"))
    assert rendered == "/v1/send?to=%2B77012345678&text=..%2Fadmin%3Fx%3D1%23frag"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(base + rendered).query)
    assert query == {"to": [NUMBER], "text": ["../admin?x=1#frag"]}
    for bad in ("https://{to}.example/x", "http://user:{text}@host/", "ftp://host/{to}", "host/x"):
        with pytest.raises(ProviderError, match="url"):
            split_url(bad, "[sms.http] url")


def test_unknown_placeholder_is_a_config_error_naming_it() -> None:
    with pytest.raises(ProviderError) as info:
        compile_template('{"to": {phone}}', "json", "[sms.http] body")
    message = str(info.value)
    assert message.startswith("[sms.http] body: unknown placeholder {phone}")
    assert all(f"{{{name}}}" in message for name in PLACEHOLDERS)


@pytest.mark.parametrize(
    "body", ['{"to": {to}', '{"to": x{to}}', '{"text": "{text}}', "to={to}", '{"a": {to} {text}}']
)
def test_a_json_body_that_cannot_be_json_is_refused(body: str) -> None:
    with pytest.raises(ProviderError, match="is not JSON once filled in"):
        compile_template(body, "json", "[sms.http] body")


def test_backend_checks_its_settings() -> None:
    url = "http://127.0.0.1:9/generic/send"
    with pytest.raises(ProviderError, match="GET request has no body"):
        GenericHttpBackend(url, method="GET", body='{"to": {to}}')
    with pytest.raises(ProviderError, match="method must be one of"):
        GenericHttpBackend(url, method="DELETE")
    with pytest.raises(ProviderError, match="id_path"):
        GenericHttpBackend(url, id_path="data..id")
    with pytest.raises(ProviderError, match="success"):
        GenericHttpBackend(url, success=[])
    with pytest.raises(ProviderError, match="one line"):
        GenericHttpBackend(url, headers={"X-Token": "a\r\nX-Evil: 1"})
    backend = GenericHttpBackend(url, headers={"Authorization": "Bearer secret-token"})
    assert "secret-token" not in repr(backend)


# Replies ----------------------------------------------------------------------------------


def test_find_id_follows_dotted_paths() -> None:
    reply = {"data": {"messages": [{"id": "a-1"}, {"id": 77}]}, "flag": True}
    assert find_id(reply, "data.messages.0.id") == "a-1"
    assert find_id(reply, "data.messages.1.id") == "77"
    assert find_id(reply, "data.messages.2.id") is None
    assert find_id(reply, "flag") is None
    assert find_id({"id": "has space"}, "id") is None
    assert find_id(None, "id") is None


@pytest.mark.parametrize(
    ("status", "header", "body", "expected"),
    [
        (201, None, b'{"id": "X1"}', SendResult(1, "accepted", "x1")),
        (200, None, b"{}", SendResult(1, "failed", error=NO_ID.format("id"))),
        (204, None, b"", SendResult(1, "failed", error="http: HTTP 204: ")),
        (429, "12", b"", SendResult(1, "retry", error="http: throttled", retry_after=12.0)),
        (429, None, b"", SendResult(1, "retry", error="http: throttled")),
        (502, None, b"", SendResult(1, "retry", error="http: HTTP 502")),
        (401, None, b"", SendResult(1, "failed", error="http: bad credentials")),
        (400, None, b"+77012345678?", SendResult(1, "failed", error="http: HTTP 400: [number]?")),
    ],
)  # fmt: skip
def test_replies_map_to_results(
    status: int, header: str | None, body: bytes, expected: SendResult
) -> None:
    assert generic_result(1, status, header, body, success={200, 201}, id_path="id") == expected


def test_without_an_id_path_a_success_is_accepted_under_our_own_id() -> None:
    assert generic_result(5, 200, None, b"OK", success={200}, id_path="") == SendResult(
        5, "accepted", "http-5"
    )


# Fuzz -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FUZZ = settings(max_examples=200, deadline=None)


@FUZZ
@given(
    text=st.text(max_size=80) | mutated(JSON_BODY, ["{", "}", '"', "\\", "{to}", "{x}"]),
    quoting=st.sampled_from(["json", "form", "url"]),
)
def test_fuzz_compile_template(text: str, quoting: Any) -> None:
    try:
        template = compile_template(text, quoting, "body")
    except ProviderError as exc:
        assert str(exc).startswith("body")
        return
    assert template.names <= set(PLACEHOLDERS)
    rendered = template.render(values())
    if quoting == "json":
        json.loads(rendered)  # a compiled JSON template always renders to JSON


@FUZZ
@given(text=st.text(), digits=st.text(max_size=20))
def test_fuzz_rendered_values_come_back_exactly(text: str, digits: str) -> None:
    filled = {**values(text), "to_digits": digits}
    as_json = json.loads(compile_template(JSON_BODY, "json", "body").render(filled))
    assert as_json["text"] == "Msg: " + text
    form = compile_template("a={text}&b={to_digits}", "form", "body").render(filled)
    assert dict(urllib.parse.parse_qsl(form, keep_blank_values=True)) == {"a": text, "b": digits}
    _, path = split_url("http://h/x?t={text}", "url")
    query = urllib.parse.urlsplit("http://h" + path.render(filled)).query
    assert urllib.parse.parse_qsl(query, keep_blank_values=True) == [("t", text)]


@FUZZ
@given(
    status=st.integers(100, 599),
    header=st.none() | st.text(max_size=8),
    body=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()),
    path=st.sampled_from(["", "id", "data.0.id", "a.b"]),
)
def test_fuzz_replies_never_crash_or_accept_garbage(
    status: int, header: str | None, body: bytes, path: str
) -> None:
    result = generic_result(9, status, header, body, success={200, 201}, id_path=path)
    assert result.message_id == 9
    if result.status == "accepted":
        assert status in (200, 201)
        assert result.provider_id is not None and PROVIDER_ID.fullmatch(result.provider_id)
    else:
        assert result.error and "7012345678" not in result.error
    if status in (429, 500, 503):
        assert result.status == "retry"


# Against a provider on 127.0.0.1 --------------------------------------------------------------


@pytest_asyncio.fixture
async def providers() -> AsyncIterator[FakeProviders]:
    async with running_providers() as fake:
        yield fake


async def send_one(backend: GenericHttpBackend, message: OutgoingSms | None = None) -> SendResult:
    await backend.start(lambda r: None, lambda i: None)
    try:
        [result] = await backend.send([message or sms()])
    finally:
        await backend.stop()
    return result


def json_backend(url: str, **extra: Any) -> GenericHttpBackend:
    options: dict[str, Any] = dict(
        headers=AUTH, body=JSON_BODY, id_path="data.messages.0.id", success=[200, 201]
    )
    options.update(extra)
    return GenericHttpBackend(url + "/generic/send", **options)


@pytest.mark.asyncio
async def test_json_post_sends_the_rendered_body(providers: FakeProviders) -> None:
    assert await send_one(json_backend(providers.url)) == SendResult(1, "accepted", "gen-1")
    [req] = providers.requests
    assert (req.method, req.path) == ("POST", "/generic/send")
    assert req.headers["Authorization"] == f"Bearer {GENERIC_TOKEN}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.json == {
        "to": NUMBER,
        "text": "Msg: " + NASTY,
        "ref": "1",
        "meta": {"coding": "ucs2"},
    }


@pytest.mark.asyncio
async def test_form_post_and_get_query(providers: FakeProviders) -> None:
    form = json_backend(
        providers.url, body="to={to_digits}&text={text}&coding={encoding}", body_type="form"
    )
    assert (await send_one(form, sms(text="Proxy & more", data_coding=0))).status == "accepted"
    assert providers.requests[0].form == {
        "to": NUMBER[1:],
        "text": "Proxy & more",
        "coding": "gsm7",
    }
    url = providers.url + "/generic/get?to={to}&text={text}&id={id}"
    get = GenericHttpBackend(url, method="GET", headers=AUTH, id_path="data.messages.0.id")
    assert (await send_one(get, sms(7))).status == "accepted"
    req = providers.requests[1]
    assert (req.method, req.path, req.raw) == ("GET", "/generic/get", b"")
    assert req.query == {"to": NUMBER, "text": NASTY, "id": "7"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("answer", "status", "error", "after"),
    [
        ("throttled", "retry", "http: throttled", 7.0),
        ("throttled_bare", "retry", "http: throttled", None),
        ("server_error", "retry", "http: HTTP 503", None),
        ("bad_credentials", "failed", "http: bad credentials", None),
        ("invalid", "failed", "http: HTTP 400: number [number] is not valid", None),
        ("no_id", "failed", NO_ID.format("data.messages.0.id"), None),
    ],
)  # fmt: skip
async def test_provider_answers(
    providers: FakeProviders, answer: str, status: str, error: str, after: float | None
) -> None:
    providers.respond(answer)
    assert await send_one(json_backend(providers.url)) == SendResult(
        1,
        status,
        error=error,
        retry_after=after,  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_refused_connection_is_retry(providers: FakeProviders) -> None:
    url = providers.url
    await providers.close()
    result = await send_one(json_backend(url))
    assert (result.status, result.error) == ("retry", "http: ClientConnectorError")


@pytest.mark.asyncio
async def test_worker_backs_off_when_the_provider_names_no_wait(
    providers: FakeProviders, tmp_path: Path
) -> None:
    key = create_key_file(tmp_path / "k.key")
    queue = Queue(tmp_path / "queue.db")
    [message_id] = enqueue(queue, key, NUMBER, "c", segment("Proxy"), 100.0)
    now = [100.0]
    worker = Worker(queue, key, json_backend(providers.url), retry_delay=30, clock=lambda: now[0])
    providers.respond("throttled_bare", "server_error", "throttled")
    await worker.start()
    try:
        not_before = []
        for _ in range(3):
            assert (await worker.step()).retried == 1
            not_before.append(queue.get(message_id).not_before - now[0])
            now[0] = queue.get(message_id).not_before
        assert not_before == [30.0, 60.0, 7.0]  # doubling, until the provider names a wait
        assert (await worker.step()).accepted == 1
    finally:
        await worker.stop()
    assert queue.get(message_id).state == State.ACCEPTED
    assert len(queue.attempts(message_id)) == 4
    queue.close()
