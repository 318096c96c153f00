"""``kopir doctor``: a healthy setup passes, and each problem is found with what to fix.

Everything it contacts is on 127.0.0.1: the mask host and the DCs are plain listening sockets,
the clock is compared with a stdlib HTTP server sending a chosen Date, a taken port is held by
another real process, and a port held by kopir by a real ``kopir relay serve``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import signing
from kopir.config import load_config
from kopir.doctor import check_sms, check_web, diagnose
from kopir.doctorcheck import Check
from kopir.doctorports import is_kopir
from kopir.setup import initialize
from tests.cli import kopir

DC_NUMBERS = (1, 2, 3, 4, 5)
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def free_port() -> int:
    """A port nothing listens on (bound and released; nobody else on 127.0.0.1 takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def toml_dump(table: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for a config: scalars, lists, tables and arrays of tables."""
    lines = [f"[{prefix}]"] if prefix else []
    later = []
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            later.append(toml_dump(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            later += [toml_dump(v, name).replace(f"[{name}]", f"[[{name}]]", 1) for v in value]
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines + [""] + later) + "\n"


class ClockHandler(BaseHTTPRequestHandler):
    skew = 0.0

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(time.time() + self.skew, usegmt=True)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Site:
    """A machine set up by ``kopir init``, its config pointed at loopback peers."""

    path: Path
    table: dict[str, Any]
    clock: ThreadingHTTPServer
    listeners: list[socket.socket] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.path.parent / "data"

    def listener(self) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # the kernel completes connections; nobody needs to accept them
        self.listeners.append(sock)
        return int(sock.getsockname()[1])

    def set(self, section: str, key: str, value: Any) -> None:
        table = self.table
        for part in section.split("."):
            table = table.setdefault(part, {})
        table[key] = value
        self.path.write_text(toml_dump(self.table), encoding="utf-8")

    def skew_clock(self, seconds: float) -> None:
        handler = type("SkewedClock", (ClockHandler,), {"skew": seconds})
        self.clock.RequestHandlerClass = handler

    def diagnose(self) -> dict[str, Check]:
        checks = asyncio.run(diagnose(self.path))
        return {check.name: check for check in checks}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "config.toml"
    initialize(path)
    clock = ThreadingHTTPServer(("127.0.0.1", 0), ClockHandler)
    thread = threading.Thread(target=clock.serve_forever, daemon=True)
    thread.start()
    site = Site(path, tomllib.loads(path.read_text(encoding="utf-8")), clock)
    dc = site.listener()
    relay = site.table["relay"]
    relay.update(
        listen=[f"127.0.0.1:{free_port()}"],
        metrics_listen=f"127.0.0.1:{free_port()}",
        mask_host="127.0.0.1",
        mask_port=site.listener(),
        local_test_dc=False,
        dc={str(n): f"127.0.0.1:{dc}" for n in DC_NUMBERS},
    )
    site.table.setdefault("web", {})["listen"] = f"127.0.0.1:{free_port()}"
    site.set("doctor", "time_url", f"http://127.0.0.1:{clock.server_address[1]}/")
    try:
        yield site
    finally:
        clock.shutdown()
        clock.server_close()
        thread.join(timeout=10)
        for sock in site.listeners:
            sock.close()


def test_a_healthy_setup_passes(site: Site) -> None:
    result = kopir("doctor", "-c", site.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("ok ") for line in result.stdout.splitlines()[:-1])
    assert result.stdout.rstrip().splitlines()[-1].endswith("0 warning(s), 0 failure(s)")
    out = json.loads(kopir("doctor", "-c", site.path, "--json").stdout)
    assert out["ok"] is True
    statuses = {check["name"]: check["status"] for check in out["checks"]}
    relay, web = site.table["relay"], site.table["web"]
    assert statuses == dict.fromkeys(
        [
            "config",
            "relay settings",
            "publisher relays",
            "trust root",
            "sms backend",
            "web settings",
            "bot",
            "data dir",
            "signing key",
            "log key",
            "distribution secret",
            "subscriber key",
            f"port {relay['listen'][0]}",
            f"port {relay['metrics_listen']}",
            f"port {web['listen']}",
            "clock",
            "mask host",
            *(f"dc {n}" for n in DC_NUMBERS),
        ],
        "ok",
    )


@pytest.mark.parametrize(
    "name",
    [
        "keys/publisher.key",
        "log/log.key",
        "keys/distribution.key",
        "keys/subscribers.key",
    ],
)
def test_a_secret_key_readable_by_others_fails(site: Site, name: str) -> None:
    path = site.data / name
    path.chmod(0o644)
    failed = [c for c in site.diagnose().values() if c.status == "fail"]
    assert len(failed) == 1
    assert str(path) in failed[0].detail and "mode 0644" in failed[0].detail
    assert failed[0].fix == f"chmod 600 {path}"


def _damage(path: Path, text: str) -> None:
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("check", "name", "text", "why"),
    [
        ("signing key", "keys/publisher.key", "untrusted comment: x\nnot base64\n", "base64"),
        ("log key", "log/log.key", "", "secret key"),
        ("distribution secret", "keys/distribution.key", "zz" * 32, "not hex"),
        ("subscriber key", "keys/subscribers.key", "short", "not 32"),
    ],
)
def test_a_damaged_secret_key_fails(site: Site, check: str, name: str, text: str, why: str) -> None:
    path = site.data / name
    _damage(path, text)
    failed = [c for c in site.diagnose().values() if c.status == "fail"]
    assert [c.name for c in failed] == [check]
    assert failed[0].detail.startswith(f"{path} cannot be used as the {check}: ")
    assert why in failed[0].detail
    assert failed[0].fix == "restore it from a backup"


def test_a_signing_key_that_is_not_its_public_key_fails(site: Site, tmp_path: Path) -> None:
    _, other_path, other = signing.generate_key_pair(tmp_path, "other", None)
    (site.data / "keys/publisher.key").write_bytes(other_path.read_bytes())
    check = site.diagnose()["signing key"]
    assert check.status == "fail"
    assert f"it is key {other.hex_id}, but publisher.pub is another key" in check.detail


def test_an_encrypted_signing_key_is_opened_with_the_passphrase_variable(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub, secret, made = signing.generate_key_pair(tmp_path, "enc", b"correct horse")
    (site.data / "keys/publisher.key").write_bytes(secret.read_bytes())
    (site.data / "keys/publisher.pub").write_bytes(pub.read_bytes())
    monkeypatch.delenv(signing.PASSPHRASE_ENV, raising=False)
    check = site.diagnose()["signing key"]
    assert check.status == "ok" and f"encrypted: kopir run needs ${signing.PASSPHRASE_ENV}" in (
        check.detail
    )
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "correct horse")
    check = site.diagnose()["signing key"]
    assert check.status == "ok" and f"key {made.hex_id}, encrypted" in check.detail
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "wrong")
    check = site.diagnose()["signing key"]
    assert check.status == "fail" and "wrong passphrase" in check.detail


def test_the_bot_is_checked_as_kopir_run_checks_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KOPIR_BOT_TOKEN", raising=False)
    assert site.diagnose()["bot"].status == "ok"
    monkeypatch.setenv("KOPIR_BOT_TOKEN", "123:abc")
    site.set("bot", "base_url", "http://127.0.0.1:1/bot")
    check = site.diagnose()["bot"]
    assert (check.status, check.fix) == ("warn", "add your Telegram user id to [bot] admins")
    site.set("bot", "admins", [42])
    assert site.diagnose()["bot"].status == "ok"
    site.set("bot", "base_url", "http://bot.example/bot")
    check = site.diagnose()["bot"]
    assert check.status == "warn" and "token would go out in clear" in check.detail
    site.set("bot", "base_url", "https://bot.example/bot")
    site.set("bot", "mode", "webhook")
    site.set("bot", "webhook_url", "http://bot.example/hook")
    check = site.diagnose()["bot"]
    assert check.status == "fail" and "[bot] webhook_url must be an https:// URL" in check.detail
    monkeypatch.setenv("KOPIR_BOT_WEBHOOK_SECRET", "s3cret")
    site.set("bot", "webhook_url", "https://bot.example/hook")
    held = site.listener()
    site.set("bot", "webhook_listen", f"127.0.0.1:{held}")
    checks = site.diagnose()
    assert checks["bot"].status == "ok"
    assert checks[f"port 127.0.0.1:{held}"].status == "fail"  # a webhook server listens there


def test_the_cli_prints_the_fix_and_exits_1(site: Site) -> None:
    key = site.data / "keys/publisher.key"
    key.chmod(0o640)
    result = kopir("doctor", "-c", site.path)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert line == f"FAIL  signing key: {key} is mode 0640: other users can read it -> fix: " + (
        f"chmod 600 {key}"
    )
    assert result.stdout.rstrip().endswith("1 failure(s)")


def test_a_world_writable_data_dir_fails(site: Site) -> None:
    site.data.chmod(0o777)
    check = site.diagnose()["data dir"]
    assert check.status == "fail" and check.fix == f"chmod 700 {site.data}"


def test_a_port_taken_by_another_process_names_it(site: Site) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        port = int(holder.stdout.readline())
        site.set("relay", "listen", [f"127.0.0.1:{port}"])
        check = site.diagnose()[f"port 127.0.0.1:{port}"]
        holder.stdin.close()  # it exits
    assert check.status == "fail"
    assert f"taken by pid {holder.pid} (python" in check.detail
    assert check.fix.startswith(f"stop pid {holder.pid}") and "[relay] listen" in check.fix


def test_ports_held_by_a_running_kopir_are_fine(site: Site) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopir.cli", "relay", "serve", "-c", str(site.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("KOPIR_")},
    )
    killer = threading.Timer(60, proc.kill)  # a hung relay cannot hang the test
    killer.start()
    try:
        assert proc.stdout is not None
        assert "relay listening" in proc.stdout.readline()
        checks = site.diagnose()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        killer.cancel()
    for key in ("listen", "metrics_listen"):
        address = site.table["relay"][key]
        address = address[0] if isinstance(address, list) else address
        check = checks[f"port {address}"]
        assert check.status == "ok", check
        assert f"in use by a running kopir (pid {proc.pid}: kopir relay serve)" in check.detail


def test_two_of_our_servers_on_one_port_fail(site: Site) -> None:
    port = free_port()
    site.table["relay"]["metrics_listen"] = f"127.0.0.1:{port}"
    site.set("web", "listen", f"127.0.0.1:{port}")
    check = site.diagnose()[f"port {port}"]
    assert check.status == "fail"
    assert check.detail == "used by both [relay] metrics_listen and [web] listen"
    assert check.fix == "give [web] listen another port"


def test_an_unreachable_mask_host_fails(site: Site) -> None:
    port = free_port()
    site.set("relay", "mask_port", port)
    check = site.diagnose()["mask host"]
    assert check.status == "fail"
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in check.detail
    assert "[relay] mask_host and mask_port" in check.fix


def test_an_unreachable_dc_override_fails(site: Site) -> None:
    port = free_port()
    site.set("relay.dc", "2", f"127.0.0.1:{port}")
    checks = site.diagnose()
    assert checks["dc 2"].status == "fail"
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in checks["dc 2"].detail
    assert "[relay.dc]" in checks["dc 2"].fix
    assert all(checks[f"dc {n}"].status == "ok" for n in DC_NUMBERS if n != 2)


@pytest.mark.parametrize(
    ("skew", "status", "words"),
    [
        (-2 * 3600, "fail", "2h 0m ahead of"),
        (45 * 60, "fail", "45m behind"),
        (3 * 60, "warn", "3m behind"),
        (0, "ok", "within"),
    ],
)
def test_a_skewed_clock_is_found(site: Site, skew: float, status: str, words: str) -> None:
    site.skew_clock(skew)
    check = site.diagnose()["clock"]
    assert check.status == status, check
    assert words in check.detail
    assert ("timedatectl set-ntp true" in check.fix) == (status != "ok")


def test_an_unreachable_time_server_is_only_a_warning(site: Site) -> None:
    site.set("doctor", "time_url", f"http://127.0.0.1:{free_port()}/")
    result = kopir("doctor", "-c", site.path)
    assert result.returncode == 0, result.stdout
    assert "warn  clock: cannot read the time from" in result.stdout


def test_the_local_test_dc_is_a_warning_and_no_dc_is_dialled(site: Site) -> None:
    site.table["relay"]["dc"] = {}
    site.set("relay", "local_test_dc", True)
    checks = site.diagnose()
    assert checks["dc (local test)"].status == "warn"
    assert "local_test_dc = false" in checks["dc (local test)"].fix
    assert not [name for name in checks if name.startswith("dc ") and name[3:].isdigit()]


@pytest.mark.parametrize(
    ("text", "message", "fix"),
    [
        ("[relay\n", "not valid TOML", "correct that key"),
        ("[relay]\nmodes = ['xx']\n", "[relay] modes[0] must be", "correct that key"),
    ],
)
def test_a_broken_config_is_the_only_result(
    tmp_path: Path, text: str, message: str, fix: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    result = kopir("doctor", "-c", path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"FAIL  config: {path}: ")
    assert message in lines[0] and f"fix: {fix}" in lines[0]
    missing = kopir("doctor", "-c", tmp_path / "nope.toml", "--json")
    assert missing.returncode == 1
    (only,) = json.loads(missing.stdout)["checks"]
    assert only["status"] == "fail" and "kopir init" in only["fix"]


def test_a_relay_without_secrets_fails_with_how_to_make_one(site: Site) -> None:
    site.set("relay", "secrets", [])
    check = site.diagnose()["relay settings"]
    assert check.status == "fail" and "kopir relay secret" in check.fix


# -- what kopir run refuses on startup, the doctor fails ----------------------------------------


def fail_line(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    return line


def test_an_sms_table_kopir_run_refuses_fails(site: Site) -> None:
    site.set("sms", "backend", "twilio")  # and [sms.twilio] as kopir init wrote it: all empty
    message = "[sms.twilio] set exactly one of sender and messaging_service_sid"
    result = kopir("doctor", "-c", site.path)
    assert result.returncode == 1, result.stdout
    assert fail_line(result.stdout).startswith(f"FAIL  sms backend: {message} -> fix: correct ")
    # kopir sms send builds the backend as kopir run does, and refuses with the same words.
    send = kopir("sms", "send", "-c", site.path, "--to", "+77012345678", "--text", "hi")
    assert send.returncode == 2 and message in send.stderr


def test_an_sms_secret_from_an_unset_variable_fails(site: Site) -> None:
    for key, value in [("sender", "+15550100"), ("account_sid", "AC1")]:
        site.set("sms.twilio", key, value)
    site.set("sms.twilio", "auth_token", "env:KOPIR_TEST_TWILIO")
    site.set("sms", "backend", "twilio")
    result = kopir("doctor", "-c", site.path, "--json")
    assert result.returncode == 1
    (check,) = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert check["name"] == "sms backend"
    assert check["detail"] == "[sms.twilio] auth_token names $KOPIR_TEST_TWILIO, which is not set"
    passed = kopir("doctor", "-c", site.path, env={"KOPIR_TEST_TWILIO": "token"})
    assert passed.returncode == 0, passed.stdout
    assert "ok    sms backend: twilio" in passed.stdout.splitlines()


def test_a_web_token_kopir_run_refuses_fails(site: Site) -> None:
    short = {"KOPIR_WEB_TOKEN": "short"}
    result = kopir("doctor", "-c", site.path, env=short)
    assert result.returncode == 1, result.stdout
    line = fail_line(result.stdout)
    assert line.startswith("FAIL  web settings: [web] token must be 16-512 printable characters")
    assert line.endswith("fix: set the variable $KOPIR_WEB_TOKEN to a new token " + (
        "(the message says how to make one)"
    ))  # fmt: skip
    assert result.stdout.rstrip().endswith(" 1 failure(s)")
    run = kopir("run", "--once", "-c", site.path, env=short)
    assert run.returncode == 2 and "[web] token must be 16-512" in run.stderr
    good = kopir("doctor", "-c", site.path, env={"KOPIR_WEB_TOKEN": "t" * 24})
    assert good.returncode == 0, good.stdout
    web = site.table["web"]["listen"]
    assert f"ok    web settings: listen {web}, operator pages on" in good.stdout.splitlines()


def test_the_example_config_passes_the_startup_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KOPIR_WEB_TOKEN", raising=False)
    config = load_config(EXAMPLE)
    assert check_sms(config) == Check("sms backend", "ok", "outbox")
    web = check_web(config)
    assert web == Check("web settings", "ok", f"listen {config.web.listen}, operator pages off")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "-m", "kopir.cli", "run"], True),
        (["/usr/bin/python3", "/usr/local/bin/kopir", "run"], True),
        (["/opt/kopir/bin/kopir", "relay", "serve"], True),
        (["/opt/kopir/.venv/bin/python", "-m", "http.server"], False),
        (["nginx: master process"], False),
        ([], False),
    ],
)
def test_is_kopir(argv: list[str], expected: bool) -> None:
    assert is_kopir(argv) is expected
