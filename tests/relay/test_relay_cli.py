"""``kopir relay serve|secret|links`` as an operator runs them, including SIGHUP reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from relay import obfs2
from tests.cli import kopir
from tests.relay.fakedc import PADDED, FakeDC, encode_frame
from tests.relay.test_relay import KEY, MASK_REPLY, OTHER, DDClient, MaskHost, read_frames

THIRD = bytes.fromhex("00112233445566778899aabbccddeeff")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, port: int, dc_port: int, mask_port: int, secrets: dict[str, bytes]
) -> None:
    lines = [
        "[relay]",
        f'listen = ["127.0.0.1:{port}"]',
        'modes = ["ee", "dd"]',
        'tls_domain = "example.com"',
        'mask_host = "127.0.0.1"',
        f"mask_port = {mask_port}",
        'metrics_listen = ""',
        "[relay.dc]",
        f'"2" = "127.0.0.1:{dc_port}"',
    ]
    for name, key in secrets.items():
        lines += ["[[relay.secrets]]", f'name = "{name}"', f'secret = "{key.hex()}"']
    path.write_text("\n".join(lines) + "\n")


async def wait_for_line(stream: asyncio.StreamReader, text: str) -> str:
    async with asyncio.timeout(20):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before printing {text!r}")
            if text in line:
                return line


@pytest.mark.asyncio
async def test_sighup_adds_and_removes_secrets_without_dropping_connections(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    port = free_port()
    async with FakeDC() as dc, MaskHost() as mask:
        write_config(config, port, dc.port, mask.port, {"a": KEY, "b": OTHER})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kopir.cli", "relay", "serve", "-c", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            await wait_for_line(proc.stdout, "relay listening")
            engine = await wait_for_line(proc.stdout, "upload keystreams: ")
            assert "AES-GCM code past" in engine or "AES-CTR code (" in engine, engine
            kept = await DDClient.connect(port, KEY)
            kept.send(b"before reload!!!")
            assert await read_frames(kept.recv, 1) == [b"before reload!!!"]

            write_config(config, port, dc.port, mask.port, {"a": KEY, "c": THIRD})
            proc.send_signal(signal.SIGHUP)
            await wait_for_line(proc.stdout, "reloaded secrets: a, c")

            kept.send(b"after reload")
            assert await read_frames(kept.recv, 1) == [b"after reload"]
            kept.writer.close()

            added = await DDClient.connect(port, THIRD)
            added.send(b"new secret!!")
            assert await read_frames(added.recv, 1) == [b"new secret!!"]
            added.writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            header, enc, _ = obfs2.client_header(OTHER, PADDED, 2)
            writer.write(header + enc.update(encode_frame(PADDED, b"removed secret")))
            assert await asyncio.wait_for(reader.read(), timeout=10) == MASK_REPLY
            writer.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode()


def test_secret_prints_a_config_snippet() -> None:
    result = kopir("relay", "secret", "--domain", "example.com", "--json")
    data = json.loads(result.stdout)
    assert len(bytes.fromhex(data["secret"])) == 16
    assert data["ee"] == "ee" + data["secret"] + b"example.com".hex()
    assert data["dd"] == "dd" + data["secret"]
    text = kopir("relay", "secret").stdout
    assert "[[relay.secrets]]" in text and 'secret = "' in text


def test_links_for_each_secret_and_mode(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    write_config(config, 8443, 14443, 8444, {"a": KEY})
    result = kopir("relay", "links", "-c", config, "--host", "relay.example.org", "--json")
    assert result.returncode == 0, result.stderr
    links = {entry["mode"]: entry for entry in json.loads(result.stdout)["links"]}
    assert set(links) == {"ee", "dd"}
    assert links["ee"]["tme"] == (
        f"https://t.me/proxy?server=relay.example.org&port=8443&secret=ee{KEY.hex()}"
        + b"example.com".hex()
    )
    assert (
        links["dd"]["tg"] == f"tg://proxy?server=relay.example.org&port=8443&secret=dd{KEY.hex()}"
    )
    qr = kopir("relay", "links", "-c", config, "--qr")
    assert qr.returncode == 0
    assert any(block in qr.stdout for block in ("\u2588", "\u2580", "\u2584"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[relay]\n[[relay.secrets]]\nname = "a"\nsecret = "abc"\n', "secret must be 32 hex"),
        ("[relay]\n", "no [[relay.secrets]]"),
        (
            '[relay]\nlisten = ["nowhere"]\n[[relay.secrets]]\nname="a"\nsecret="'
            + "00" * 16
            + '"\n',
            "listen",
        ),
        ('[relay]\nmodes = ["xx"]\n', "[relay] modes[0] must be 'ee' or 'dd' or 'classic'"),
        ("[relay.limits]\nidle_timeout = 5\n", "[relay.limits] idle_timeout"),
    ],
)
def test_bad_relay_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text)
    result = kopir("relay", "serve", "-c", config, timeout=20)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert os.fspath(config) in result.stderr


def test_links_and_serve_use_the_secret_kopir_run_keeps(tmp_path: Path) -> None:
    """A config with no [[relay.secrets]] (as the example config) uses the secret `kopir run`
    made in the data dir, so `relay links` prints the links of the relay `kopir run` runs."""
    config = tmp_path / "relay.toml"
    write_config(config, 8443, 14443, 8444, {})
    config.write_text(config.read_text() + '[data]\ndir = "state"\n')
    missing = kopir("relay", "links", "-c", config)
    assert missing.returncode == 2
    assert "kopir relay secret" in missing.stderr and "state/keys/relay.secret" in missing.stderr
    kept = tmp_path / "state/keys/relay.secret"
    kept.parent.mkdir(parents=True)
    kept.write_text(THIRD.hex() + "\n")
    result = kopir("relay", "links", "-c", config, "--json")
    assert result.returncode == 0, result.stderr
    links = json.loads(result.stdout)["links"]
    assert {entry["name"] for entry in links} == {"local"}
    assert {entry["mode"] for entry in links} == {"ee", "dd"}
    assert all(THIRD.hex() in entry["tg"] for entry in links)
    kept.write_text("not hex, too short\n")
    bad = kopir("relay", "serve", "-c", config, timeout=20)
    assert bad.returncode == 2 and "must hold the relay's 16-byte key" in bad.stderr
