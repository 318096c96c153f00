"""The web app's operator side: token checks, login, sessions, rate limits, config, auth core."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from kopir.config import load_config
from kopir.web import StatusHistory, WebError, make_app, parse_listen, serve_web
from kopir.web.auth import LoginLimiter, Sessions, resolve_token, token_matches
from tests.kopir.webhelpers import (
    NOW,
    TOKEN,
    DataSite,
    Served,
    check_headers,
    served,
    site,
    write_config,
)

__all__ = ["served", "site"]  # the fixtures, used by name


# -- operator routes ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/status", "/metrics"])
def test_operator_routes_refuse_without_or_with_a_wrong_token(served: Served, path: str) -> None:
    served.clock.now += 3600  # a fresh failed-login window
    missing = served.get(path)
    assert missing.status == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
    assert "log in" in missing.text
    wrong = served.get(path, {"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status == 401 and "wrong token" in wrong.text
    basic = served.get(path, {"Authorization": "Basic b3BlcmF0b3I6eA=="})
    assert basic.status == 401
    cookie = served.get(path, {"Cookie": "kopir_session=forged"})
    assert cookie.status == 401
    for reply in (missing, wrong, basic, cookie):
        check_headers(reply)
        assert reply.headers["Cache-Control"] == "no-store"
        assert "kopir_relay_up" not in reply.text and "chart-relays" not in reply.text
    good = served.operator(path)
    assert good.status == 200 and good.headers["Cache-Control"] == "no-store"
    check_headers(good)


def test_metrics_are_prometheus_text(site: DataSite, served: Served) -> None:
    reply = served.operator("/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = reply.text.splitlines()
    assert "kopir_list_version 3" in lines and "kopir_log_entries 3" in lines
    assert "kopir_list_relays 3" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_login_form_sets_a_strict_httponly_cookie_and_logout_ends_it(served: Served) -> None:
    served.clock.now += 3600
    form = served.get("/login")
    assert form.status == 200 and 'type="password"' in form.text
    reply = served.login()
    assert reply.status == 303 and reply.headers["Location"] == "/status"
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = cookie.split(";", 1)[0]
    page = served.get("/status", {"Cookie": session})
    assert page.status == 200 and "<svg" in page.text
    out = served.request("POST", "/logout", {"Cookie": session}, b"")
    assert out.status == 303
    assert served.get("/status", {"Cookie": session}).status == 401


def test_sessions_expire(site: DataSite) -> None:
    server = Served(site.config)
    try:
        session = server.login().headers["Set-Cookie"].split(";", 1)[0]
        assert server.get("/metrics", {"Cookie": session}).status == 200
        server.clock.now += site.config.web.session + 1
        assert server.get("/metrics", {"Cookie": session}).status == 401
    finally:
        server.close()


def test_failed_logins_are_rate_limited_per_client(site: DataSite) -> None:
    server = Served(site.config)
    try:
        for _ in range(5):
            assert server.login("wrong-token-0123456789").status == 401
        limited = server.login()  # even the right token waits: a guesser learns nothing
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
        assert "too many wrong tokens" in limited.text
        assert server.operator("/metrics").status == 429
        server.clock.now += 61
        assert server.login().status == 303
        assert server.operator("/metrics").status == 200
    finally:
        server.close()


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site", "Origin": "null"}],
)
def test_cross_site_login_is_refused(served: Served, headers: dict[str, str]) -> None:
    reply = served.login(headers=headers)
    assert reply.status == 403 and "another site" in reply.text


def test_no_token_configured_means_operator_routes_are_off(tmp_path: Path) -> None:
    off = Served(write_config(tmp_path), environ={})
    try:
        for path in ("/status", "/metrics"):
            reply = off.operator(path)
            assert reply.status == 403 and "set [web] token" in reply.text
        assert off.login().status == 403
    finally:
        off.close()


@pytest.mark.parametrize(
    ("web", "words"),
    [
        ('token = "short"\n', "16-512 printable characters"),
        ('listen = "8080"\n', "[web] listen must be"),
        ('listen = "[::1]:99999"\n', "[web] listen must be"),
        ('listen = "127.0.0.1:²"\n', "[web] listen must be"),
        ('listen = "127.0.0.1:٨٠"\n', "[web] listen must be"),
        (f'listen = "127.0.0.1:{"9" * 5000}"\n', "[web] listen must be"),
    ],
)
def test_bad_web_config_is_one_clear_error(tmp_path: Path, web: str, words: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[web]\n{web}", encoding="utf-8")
    with pytest.raises(WebError) as info:
        make_app(load_config(path), StatusHistory())
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (" [::1]:443 ", ("::1", 443)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen_reads_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:²",
        "127.0.0.1:١٢",
        "127.0.0.1:𝟠𝟘",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1:-1",
        "127.0.0.1: 80",
        "127.0.0.1:" + "9" * 5000,  # int() of it would be a ValueError, not a WebError
        ":80",
        "[]:80",
        "[::1:80",
        "local host:80",
        "host\x00:80",
        "8080",
        "",
    ],
)
def test_parse_listen_refuses_with_a_web_error(text: str) -> None:
    with pytest.raises(WebError, match=r"listen must be .*the port 1-65535 in digits 0-9"):
        parse_listen(text)


def test_there_is_no_access_log(site: DataSite, caplog: pytest.LogCaptureFixture) -> None:
    """The runner mounts the SMS webhooks on this app, and their query strings carry phone
    numbers; the access log would keep them, and every client's address, at INFO."""
    number = "77012345678"
    caplog.set_level(logging.DEBUG)
    server = Served(site.config)
    try:
        queries = [f"/sms/vonage/receipt?msisdn={number}&status=delivered", f"/?to={number}"]
        assert [server.get(path).status for path in queries] == [404, 200]
    finally:
        server.close()  # waits for the handlers, so any access log line is written by now
    for entry in caplog.records:
        assert entry.name != "aiohttp.access", entry.getMessage()
        assert number not in entry.getMessage(), (entry.name, entry.getMessage())


def test_a_malformed_request_is_one_warning_not_a_traceback_quoting_it(
    site: DataSite, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp refuses a request it cannot parse with 400 and would log a traceback quoting
    the request line, query string (maybe a phone number) included."""
    number = "77012345678"
    caplog.set_level(logging.DEBUG)
    server = Served(site.config)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(f"GET /?to={number} HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".encode())
            answer = raw.recv(4096)
    finally:
        server.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:80]
    for entry in caplog.records:
        assert entry.exc_info is None, (entry.name, entry.getMessage())
        assert number not in entry.getMessage(), (entry.name, entry.getMessage())


def test_listening_on_a_busy_port_is_a_web_error(site: DataSite, served: Served) -> None:
    async def attempt() -> None:
        app = make_app(site.config, StatusHistory())
        await serve_web(app, f"127.0.0.1:{served.port}")

    with pytest.raises(WebError, match="cannot listen there"):
        asyncio.run(attempt())


# -- the auth core, without HTTP ------------------------------------------------------------


def test_sessions_table_is_bounded_and_keeps_the_newest() -> None:
    sessions = Sessions(lifetime=60, limit=3)
    ids = [sessions.create(NOW) for _ in range(5)]
    assert [sessions.valid(i, NOW) for i in ids] == [False, False, True, True, True]
    assert len(sessions) == 3 and not sessions.valid(ids[-1], NOW + 60)


def test_login_limiter_window_slides_per_client() -> None:
    limiter = LoginLimiter(failures=2, window=10)
    limiter.failed("a", NOW)
    limiter.failed("a", NOW + 5)
    assert limiter.wait("a", NOW + 6) == pytest.approx(4)
    assert limiter.wait("b", NOW + 6) == 0  # another client is not held up
    assert limiter.wait("a", NOW + 10) == 0  # the first failure aged out


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("", {}, None),
        ("env:T", {}, None),
        ("env:T", {"T": ""}, None),
        ("env:T", {"T": TOKEN}, TOKEN),
        (TOKEN, {}, TOKEN),
    ],
)
def test_token_from_config_or_environment(
    value: str, environ: dict[str, str], expected: str | None
) -> None:
    assert resolve_token(value, environ) == expected
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN[:-1], TOKEN)
