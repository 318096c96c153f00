"""``kopir list probe|build|show`` through the real command line, against a real relay process
(``kopir relay serve``) in front of a fake DC on loopback; and ``[publisher]`` config checks."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import signing
from kopir.config import ConfigError, load_config
from kopir.listcmd import publisher_relays
from proxylist import Relay
from tests.cli import kopir
from tests.relay.fakedc import FakeDC
from tests.relay.test_relay import KEY, OTHER, MaskHost
from tests.relay.test_relay_cli import free_port, wait_for_line

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- [publisher] config ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_example_config_probes_its_own_relay(tmp_path: Path) -> None:
    example = (ROOT / "config.example.toml").read_text()
    config = load_config(ROOT / "config.example.toml")
    assert config.publisher.list_lifetime == 72 * 3600
    assert config.publisher.renew_before < config.publisher.list_lifetime
    # As shipped, the example relay has no secret yet: the error says what to add.
    with pytest.raises(ConfigError, match="no relays to probe"):
        publisher_relays(config)
    # `kopir relay secret >> config.toml` is how an operator adds one. The test also moves the
    # relay to a free port and points its DC and mask host at loopback (never the internet).
    port = free_port()
    async with FakeDC() as dc, MaskHost() as mask:
        text = example
        for old, new in [
            ('"127.0.0.1:8443"', f'"127.0.0.1:{port}"'),
            ("[relay.dc]\n", f'[relay.dc]\n"2" = "127.0.0.1:{dc.port}"\n'),
            ("mask_port = 8080", f"mask_port = {mask.port}"),
            ('metrics_listen = "127.0.0.1:9464"', 'metrics_listen = ""'),
        ]:
            assert text.count(old) == 1, f"config.example.toml changed: {old!r}"
            text = text.replace(old, new)
        path = write(
            tmp_path, text + f'[[relay.secrets]]\nname = "default"\nsecret = "{KEY.hex()}"\n'
        )
        (relay,) = publisher_relays(load_config(path))
        assert relay == Relay("local:default", "127.0.0.1", port, KEY, "ee", "example.com")
        async with relay_process(path):
            code, out, err = await cli("list", "probe", "-c", path)
    assert code == 0, err
    assert out.splitlines()[1].split()[:5] == ["local:default", str(port), "ok", "ok", "ok"]


def test_relay_entries_become_relays(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[publisher]\nlocal_relay = ""\n'
        '[[publisher.relays]]\nname = "almaty"\nserver = "Relay1.Example.org"\nport = 443\n'
        f'key = "{KEY.hex().upper()}"\ndomain = "example.com"\nalt_ports = [8443, 80]\n'
        'tags = ["kz"]\n'
        '[[publisher.relays]]\nname = "berlin"\nserver = "10.0.0.2"\nport = 8443\n'
        f'key = "{OTHER.hex()}"\nmode = "dd"\n',
    )
    almaty, berlin = publisher_relays(load_config(path))
    assert almaty == Relay(
        "almaty", "relay1.example.org", 443, KEY, "ee", "example.com", (8443, 80), ("kz",)
    )
    assert berlin == Relay("berlin", "10.0.0.2", 8443, OTHER, "dd")


ENTRY = {"name": '"a"', "server": '"r.example.org"', "port": "443", "key": f'"{KEY.hex()}"',
         "domain": '"example.com"'}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": '"abcd"'}, "#1 ('a'): key must be 32 hex characters"),
        ({"key": '"' + "zz" * 16 + '"'}, "key must be 32 hex characters"),
        ({"server": None}, "#1 ('a'): server is missing"),
        ({"name": None}, "#1: name is missing"),
        ({"port": "70000"}, "[publisher.relays[0]] port must be from 0 to 65535, got 70000"),
        ({"port": '"443"'}, "port must be a whole number"),
        ({"domain": None}, "an ee relay needs a domain"),
        ({"mode": '"dd"'}, "an ee relay needs a domain; others take none"),
        ({"mode": '"tls"'}, "mode must be 'ee' or 'dd' or 'classic'"),
        ({"alt_ports": "[0]"}, "alt_ports[0] must be from 1 to 65535, got 0"),
        ({"tags": "[1]"}, "tags[0] must be a string"),
        ({"domain": '"пример.kz"'}, "plain ASCII host names"),
        ({"color": '"red"'}, "unknown key"),
    ],
)
def test_bad_relay_entries_are_named(tmp_path: Path, change: dict, message: str) -> None:
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    text = "[[publisher.relays]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items())
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        publisher_relays(load_config(path))
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert message in str(info.value)


def test_repeated_names_and_bad_durations(tmp_path: Path) -> None:
    entry = "[[publisher.relays]]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY.items())
    path = write(tmp_path, entry + entry)
    with pytest.raises(ConfigError, match="names repeat: a"):
        publisher_relays(load_config(path))
    bad = write(tmp_path, '[publisher]\nlist_lifetime = "1h"\nrenew_before = "2h"\n' + entry)
    result = kopir("list", "build", "-c", bad)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "renew_before must be shorter than the list lifetime" in result.stderr


toml_values = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.text(max_size=40).map(json.dumps),
    st.lists(st.integers(-5, 70_000), max_size=3).map(str),
    st.sampled_from(["true", '"ee"', '"dd"', '"classic"', f'"{KEY.hex()}"', '"example.com"']),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["name", "server", "port", "key", "mode", "domain", "alt_ports", "tags", "bogus"]
        ),
        toml_values,
        max_size=9,
    )
)
def test_fuzz_relay_entries_give_a_relay_or_one_clear_line(entry: dict) -> None:
    text = "[publisher]\nlocal_relay = ''\n[[publisher.relays]]\n"
    text += "".join(f"{k} = {v}\n" for k, v in entry.items())
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), text)
        try:
            (relay,) = publisher_relays(load_config(path))
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: ") and "\n" not in message
            return
    assert len(relay.key) == 16 and relay.name and relay.server
    assert set(entry) >= {"name", "server", "port", "key"}


# -- show -----------------------------------------------------------------------------------


def test_show_summarises_a_list_and_rejects_garbage(tmp_path: Path) -> None:
    doc = signing.ListDocument(
        "kopir.test", 4, "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z",
        ({"type": "proxy", "server": "relay1.example.org", "port": 8443,
          "secret": "ee" + KEY.hex() + b"example.com".hex(), "domain": "example.com",
          "ports_tried": [443, 8443], "last_ok": "2026-01-01T00:00:00Z", "rtt_ms": 12,
          "tags": ["kz"]},),
        "ab" * 32,
    )  # fmt: skip
    path = tmp_path / "list.json"
    path.write_bytes(doc.encode())
    result = kopir("list", "show", path)
    assert result.returncode == 0, result.stderr
    assert "kopir.test list version 4" in result.stdout and "EXPIRED" in result.stdout
    assert "relay1.example.org:8443  ee  example.com  rtt 12 ms  ports tried 443,8443" in (
        result.stdout
    )
    assert "signatures (check them with kopir verify list): none" in result.stdout
    data = json.loads(kopir("list", "show", path, "--json").stdout)
    assert data["version"] == 4 and data["proxies"][0]["port"] == 8443
    path.write_bytes(b'{"version": 4}')
    bad = kopir("list", "show", path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "is not a kopir list" in bad.stderr and "Traceback" not in bad.stderr


# -- against a real relay -------------------------------------------------------------------


def relay_config(
    path: Path, port: int, dc: int, mask: int, relay_keys: dict[str, bytes], dead: int
) -> None:
    """One relay (``relay_keys``), listed as local_relay; plus ``far``, which holds OTHER on the
    same relay, and ``gone``, a port with nothing behind it."""
    lines = [
        "[data]", f'dir = "{path.parent / "data"}"',
        "[relay]", f'listen = ["127.0.0.1:{port}"]', 'modes = ["ee", "dd"]',
        'tls_domain = "example.com"', 'mask_host = "127.0.0.1"', f"mask_port = {mask}",
        'metrics_listen = ""',
        "[relay.dc]", f'"2" = "127.0.0.1:{dc}"',
        "[publisher]", 'name = "kopir.test"', 'local_relay = "127.0.0.1"', 'probe_timeout = "5s"',
        "[[publisher.relays]]", 'name = "far"', 'server = "127.0.0.1"', f"port = {port}",
        f'key = "{OTHER.hex()}"', 'mode = "dd"',
        "[[publisher.relays]]", 'name = "gone"', 'server = "127.0.0.1"', f"port = {dead}",
        f'key = "{KEY.hex()}"', 'mode = "dd"',
    ]  # fmt: skip
    for name, key in relay_keys.items():
        lines += ["[[relay.secrets]]", f'name = "{name}"', f'secret = "{key.hex()}"']
    path.write_text("\n".join(lines) + "\n")


@asynccontextmanager
async def relay_process(config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kopir.cli", "relay", "serve", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        await wait_for_line(proc.stdout, "relay listening")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), timeout=20)


async def cli(*args: object) -> tuple[int, str, str]:
    result = await asyncio.to_thread(kopir, *map(str, args))
    return result.returncode, result.stdout, result.stderr


@pytest.mark.asyncio
async def test_probe_and_build_against_a_real_relay(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    port, dead = free_port(), free_port()
    async with FakeDC() as dc, MaskHost() as mask:
        relay_config(config, port, dc.port, mask.port, {"main": KEY, "other": OTHER}, dead)
        async with relay_process(config) as proc:
            code, out, err = await cli("list", "probe", "-c", config, "--json")
            assert code == 1, err  # "gone" is down
            probe = {r["name"]: r for r in json.loads(out)["relays"]}
            assert [s["stage"] for s in probe["local:main"]["ports"][0]["stages"]] == [
                "connect", "tls-hmac", "dc",
            ]  # fmt: skip
            assert probe["local:main"]["ok"] and probe["far"]["ok"]
            refused = probe["gone"]["ports"][0]["stages"]
            assert [(s["stage"], s["ok"]) for s in refused] == [("connect", False)]
            code, table, _ = await cli("list", "probe", "-c", config)
            assert "local:main" in table and "3 of 4 relays healthy" in table

            code, out, err = await cli("list", "build", "-c", config)
            assert code == 0, err
            assert out.startswith("list v1 written: 3 healthy of 4 relays (first)")
            assert "down: gone" in out and "signed by" not in out
            assert "unsigned: sign it offline with kopir sign list" in out
            code, out, _ = await cli("list", "build", "-c", config, "--no-log")
            assert (code, out.splitlines()[0]) == (0, "list unchanged (v1): 3 healthy of 4 relays")

            # The relay forgets OTHER (SIGHUP): "far" now fails its HMAC check, so v2.
            relay_config(config, port, dc.port, mask.port, {"main": KEY}, dead)
            proc.send_signal(signal.SIGHUP)
            assert proc.stdout is not None
            await wait_for_line(proc.stdout, "reloaded secrets: main")
            code, out, err = await cli("list", "build", "-c", config, "--json")
            assert code == 0, err
    built = json.loads(out)
    assert (built["version"], built["reason"], built["healthy"]) == (2, "changed", 1)
    far = next(r for r in built["relays"] if r["name"] == "far")
    assert far["ports"][0]["stages"][-1]["ok"] is False
    lists = tmp_path / "data" / "lists"
    v2 = signing.parse_list((lists / "list.json").read_bytes())
    v1_bytes = (lists / "versions" / "1.json").read_bytes()
    import hashlib

    assert v2.previous == hashlib.sha256(v1_bytes).hexdigest()
    assert [(p["server"], p["port"], p["domain"]) for p in v2.proxies] == [
        ("127.0.0.1", port, "example.com")
    ]
    log = signing.LogStore(tmp_path / "data" / "log")
    assert log.size == 2 and log.entry(1) == (lists / "list.json").read_bytes()


@pytest.mark.asyncio
async def test_built_list_signed_online_and_offline_verifies(tmp_path: Path) -> None:
    """``kopir list build --key`` and an offline ``kopir sign list`` both satisfy ``kopir verify
    list`` under a trust root with a lists threshold of 2."""
    keys = tmp_path / "keys"
    for name in ("online", "offline"):
        assert kopir("keys", "generate", "--name", name, "--out", keys).returncode == 0
    trust = tmp_path / "trust.json"
    made = kopir(
        "trust", "init", "--out", trust, f"--key={keys}/online.pub", f"--key={keys}/offline.pub",
        "--threshold-lists", "2", "--sign", keys / "online.key",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = tmp_path / "config.toml"
    port = free_port()
    async with FakeDC() as dc, MaskHost() as mask:
        relay_config(config, port, dc.port, mask.port, {"main": KEY, "other": OTHER}, free_port())
        async with relay_process(config):
            code, out, err = await cli(
                "list", "build", "-c", config, "--key", keys / "online.key", "--no-log"
            )
    assert code == 0, err
    listed = tmp_path / "data" / "lists" / "list.json"
    state = ("--state", tmp_path / "state")
    one = kopir("verify", "list", listed, "--trust", trust, *state)
    assert one.returncode == 1 and "threshold" in one.stderr  # one signature of two
    assert kopir("sign", "list", listed, "--key", keys / "offline.key").returncode == 0
    ok = kopir("verify", "list", listed, "--trust", trust, *state)
    assert ok.returncode == 0, ok.stderr
    assert "valid: kopir.test list version 1, 3 proxies" in ok.stdout
    shown = kopir("list", "show", "-c", config)
    assert shown.returncode == 0 and "kopir.test list version 1" in shown.stdout
    assert shown.stdout.count("(STALE)") == 0 and "signatures" in shown.stdout


def test_build_with_every_relay_down_keeps_nothing_and_says_why(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    relay_config(config, free_port(), free_port(), free_port(), {"main": KEY}, free_port())
    result = kopir("list", "build", "-c", config, "--no-sign", "--no-log")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "none of the 3 relays is healthy, so no list is written" in result.stderr
    assert not (tmp_path / "data" / "lists" / "list.json").exists()
