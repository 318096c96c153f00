"""``kopir run`` with the example config on an empty directory, as the README says: the relay
(dialling the built-in local test DC), a probed and signed list v1 in the log, and each test
subscriber's signed links in the outbox, which ``kopir verify sms`` accepts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import signing
from kopir.signcmd import find_links
from signing import note
from signing.keyfiles import load_public_key
from smsgw.outbox import read_outbox
from tests.cli import kopir
from tests.relay.test_relay_cli import free_port

ROOT = Path(__file__).resolve().parents[2]


WEB_PORTS: dict[Path, int] = {}


def example_config(tmp_path: Path, text: str | None = None) -> Path:
    """The example config as shipped, moved to free loopback ports (tests run side by side)."""
    text = (ROOT / "config.example.toml").read_text() if text is None else text
    web = free_port()
    for old, new in [
        ('listen = ["127.0.0.1:8443"]', f'listen = ["127.0.0.1:{free_port()}"]'),
        ('metrics_listen = "127.0.0.1:9464"', f'metrics_listen = "127.0.0.1:{free_port()}"'),
        ('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{web}"'),
        ("mask_port = 8080", f"mask_port = {web}"),
    ]:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    WEB_PORTS[path] = web
    return path


def get(url: str, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def outbox_texts(data: Path) -> dict[str, str]:
    """Each recipient's reassembled SMS text, by keyed reference."""
    texts: dict[str, str] = {}
    for part in read_outbox(data / "sms/outbox"):
        texts[str(part["to_ref"])] = texts.get(str(part["to_ref"]), "") + str(part["text"])
    return texts


def test_run_once_brings_up_the_whole_pipeline(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    result = kopir("run", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert "probed 1 relays: 1 healthy; list v1 (new); queued 4 SMS parts" in result.stdout
    data = tmp_path / "data"
    for key in ("keys/publisher.key", "log/log.key", "keys/relay.secret", "keys/subscribers.key"):
        assert (data / key).stat().st_mode & 0o777 == 0o600, key
    trust = kopir("verify", "trust", data / "trust.json", "--trust", data / "trust.json")
    assert trust.returncode == 0, trust.stderr
    trusted = ("--trust", data / "trust.json", "--state", tmp_path / "state")
    listed = kopir("verify", "list", data / "lists/list.json", *trusted)
    assert listed.returncode == 0, listed.stderr
    document = signing.parse_list((data / "lists/list.json").read_bytes())
    assert [p["server"] for p in document.proxies] == ["127.0.0.1"]

    checkpoint = (data / "public/checkpoint").read_bytes()
    public = load_public_key(data / "log/log.pub")
    parsed = note.parse_checkpoint(
        note.verify_note(checkpoint, "kopir.example/log", public.key).text
    )
    assert parsed.size == 1  # list v1

    texts = outbox_texts(data)
    assert len(texts) == 2  # the two [subscribers] test_numbers
    for text in texts.values():
        verdict = kopir("verify", "sms", text, "--trust", data / "trust.json")
        assert verdict.returncode == 0, verdict.stderr
    assert "7010000001" not in json.dumps(read_outbox(data / "sms/outbox"))
    # As README says: the log holds each whole message, so every link in it checks out.
    log = (data / "sms/outbox/outbox.log").read_text(encoding="utf-8")
    everything = kopir("verify", "sms", "-", "--trust", data / "trust.json", input=log)
    assert everything.returncode == 0, everything.stderr
    links = find_links(log)
    assert len(links) == 2 and all(link in everything.stdout for link in links)

    again = kopir("run", "-c", config, "--once")
    assert again.returncode == 0 and "created" not in again.stdout  # nothing re-made
    assert "list v1 (unchanged)" in again.stdout and "queued" not in again.stdout
    assert len(read_outbox(data / "sms/outbox")) == 4  # nothing sent twice


def test_run_serves_the_web_app_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    token = "a-test-token-of-some-length"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopir.cli", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KOPIR_WEB_TOKEN": token},
    )
    try:
        deadline = time.monotonic() + 60
        while len(read_outbox(tmp_path / "data/sms/outbox")) < 4:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        site = f"http://127.0.0.1:{WEB_PORTS[config]}"
        status, body = get(f"{site}/list.json")
        assert status == 200 and body == (tmp_path / "data/lists/list.json").read_bytes()
        assert get(f"{site}/status")[0] in (401, 403)
        status, page = get(f"{site}/status", token)
        assert status == 200 and b"<svg" in page and b"local:local" in page
        status, metrics = get(f"{site}/metrics", token)
        assert status == 200 and b"relay_" in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "kopir run: stopping" in out and "kopir run: stopped" in out


def test_a_config_mistake_stops_run_before_anything_starts(tmp_path: Path) -> None:
    """Each of these is found by a part of the job that used to start after the relay was
    listening and the test subscribers were added; now run checks them all first."""
    text = (ROOT / "config.example.toml").read_text()
    broken = {
        "twilio": (text.replace('backend = "outbox"', 'backend = "twilio"', 1), "[sms.twilio]"),
        "token": (text, "[web] token"),
    }
    for name, (body, said) in broken.items():
        folder = tmp_path / name
        folder.mkdir()
        config = example_config(folder, body)
        env = {"KOPIR_WEB_TOKEN": "short"} if name == "token" else {}
        result = kopir("run", "-c", config, "--once", env=env)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert said in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert "relay listening" not in result.stdout, result.stdout
        assert "test subscribers" not in result.stdout, result.stdout
        assert not (folder / "data/sms/subscribers.db").exists()


def test_a_taken_relay_or_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    for which in ("listen", "metrics_listen"):
        folder = tmp_path / which
        folder.mkdir()
        config = example_config(folder)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            text = config.read_text()
            key = "listen = [" if which == "listen" else "metrics_listen = "
            start = text.index(key)
            end = text.index("\n", start)
            value = f'["127.0.0.1:{port}"]' if which == "listen" else f'"127.0.0.1:{port}"'
            config.write_text(text[:start] + key.split("=")[0] + "= " + value + text[end:])
            for args in (("run", "-c", config, "--once"), ("relay", "serve", "-c", config)):
                result = kopir(*args)
                assert result.returncode == 2, (args, result.stdout, result.stderr)
                assert "Traceback" not in result.stderr, result.stderr
                assert f"cannot listen for {'clients' if which == 'listen' else 'metrics'}" in (
                    result.stderr
                ), result.stderr
                assert f"127.0.0.1:{port}" in result.stderr, result.stderr
