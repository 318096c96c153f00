"""``kopir list assign|exposed`` through the real command line, on a list built by probing a
real relay process on loopback."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

import signing
from kopir.config import load_config
from kopir.listcmd import publisher_relays
from tests.cli import kopir
from tests.kopir.test_cli_list import cli, relay_config, relay_process
from tests.relay.fakedc import FakeDC
from tests.relay.test_relay import KEY, OTHER, MaskHost
from tests.relay.test_relay_cli import free_port

PHONE = "+77012345678"


@pytest.mark.asyncio
async def test_assign_gives_signed_links_and_exposed_names_cohorts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert kopir("keys", "generate", "--name", "op", "--out", keys).returncode == 0
    trust_file = tmp_path / "trust.json"
    made = kopir("trust", "init", "--out", trust_file, f"--key={keys}/op.pub",
                 "--sign", keys / "op.key")  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = tmp_path / "config.toml"
    port = free_port()
    async with FakeDC() as dc, MaskHost() as mask:
        relay_config(config, port, dc.port, mask.port, {"main": KEY, "other": OTHER}, free_port())
        async with relay_process(config):
            code, _, err = await cli("list", "build", "-c", config, "--no-sign", "--no-log")
    assert code == 0, err

    key = ("--key", keys / "op.key")
    first = kopir("list", "assign", PHONE, "8 701 234 5679", "tg:42", "-c", config, *key, "--json")
    assert first.returncode == 0, first.stderr
    given = json.loads(first.stdout)["assignments"]
    assert [g["recipient"] for g in given] == [PHONE, "+77012345679", "tg:42"]
    trust = signing.parse_trust_root(trust_file.read_bytes())
    healthy = {"local:main", "local:other", "far"}  # "gone" has nothing behind its port
    for item in given:
        assert len(set(item["relays"])) == 2 and set(item["relays"]) <= healthy
        assert PHONE not in item["cohort"]
        for link in item["links"]:
            assert signing.verify_link(link, trust, time.time()).port == port
    again = kopir("list", "assign", PHONE, "-c", config, *key, "--json")
    assert json.loads(again.stdout)["assignments"][0]["relays"] == given[0]["relays"]
    text = kopir("list", "assign", "tg:42", "-c", config, *key)
    assert text.returncode == 0 and text.stdout.startswith("tg:42: ")
    assert text.stdout.count("https://t.me/proxy?") == 2

    record = tmp_path / "data" / "distribution.db"
    raw = b"".join(p.read_bytes() for p in record.parent.glob("distribution.db*"))
    assert b"7012345678" not in raw and b"tg:42" not in raw

    # A poster batch is one more recipient: its links are the ring's relays for poster:<batch>.
    poster = kopir("poster", "-c", config, "--out", tmp_path / "p.html", "--batch", "b1",
                   "--count", "3", *key, "--json")  # fmt: skip
    assert poster.returncode == 0, poster.stderr
    printed = json.loads(poster.stdout)["links"]
    assert len(printed) == 3 and len(set(printed)) == 3  # all three healthy relays
    for link in printed:
        assert signing.verify_link(link, trust, time.time()).port == port
    given.append({"cohort": "poster", "relays": sorted(healthy)})

    for name in sorted(healthy):
        shown = kopir("list", "exposed", name, "-c", config, "--json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        cohorts = {c["cohort"] for c in report["cohorts"]}
        people = {g["cohort"] for g in given[:-1] if name in g["relays"]}
        assert people < cohorts and len(cohorts - people) == 1  # plus the poster batch
    assert kopir("list", "exposed", "gone", "-c", config, "--json").returncode == 0

    # A relay leaves the list (burned, down): within [distribution] interval the rate limit
    # gives a recipient their previous set again, the gone relay in it, and links are signed
    # for it all the same (this crashed with "no relay named ..." before).
    listed = tmp_path / "data" / "lists" / "list.json"
    document = signing.parse_list(listed.read_bytes())
    gone = next(r for r in publisher_relays(load_config(config)) if r.name in given[0]["relays"])
    kept = [
        p for p in document.proxies if (p["server"], p["secret"]) != (gone.server, gone.secret_hex)
    ]
    assert len(kept) == len(document.proxies) - 1
    listed.write_bytes(dataclasses.replace(document, proxies=tuple(kept)).encode())
    again = kopir("list", "assign", PHONE, "-c", config, *key, "--json")
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)["assignments"][0]
    assert repeat["relays"] == given[0]["relays"] and repeat["limited"] is True
    assert len(repeat["links"]) == 2
    for link in repeat["links"]:
        assert signing.verify_link(link, trust, time.time()).port == port
    poster = kopir("poster", "-c", config, "--out", tmp_path / "p2.html", "--batch", "b1",
                   "--count", "3", *key, "--json")  # fmt: skip
    assert poster.returncode == 0, poster.stderr
    assert sorted(json.loads(poster.stdout)["links"]) == sorted(printed)


def test_assign_and_exposed_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    relay_config(config, free_port(), free_port(), free_port(), {"main": KEY}, free_port())
    no_list = kopir("list", "assign", PHONE, "-c", config)
    assert no_list.returncode == 1 and "kopir list build" in no_list.stderr
    bad = kopir("list", "assign", "not a number", "-c", config)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    unknown = kopir("list", "exposed", "nosuch", "-c", config)
    assert unknown.returncode == 2 and "no relay named 'nosuch'" in unknown.stderr
    nothing = kopir("list", "exposed", "gone", "-c", config)
    assert nothing.returncode == 1 and "nothing was handed out" in nothing.stderr
