"""The publisher's SMS campaign when a relay has left the list: a subscriber given a set
within ``[distribution] interval`` gets that set again (``proxylist.distribute``), and its
links are signed, the gone relay's too. This raised "no relay named ..." and queued nothing
for anyone."""

from __future__ import annotations

import os
from pathlib import Path

import signing
import smsgw
from kopir.config import load_config
from kopir.distcmd import open_distributor
from kopir.listcmd import publisher_relays
from kopir.publisher import Publisher
from kopir.smscmd import subscriber_store
from proxylist import epoch_of
from signing.canonical import rfc3339

T0 = 1_800_000_000.0
PHONE = "+77012345678"
RELAYS = {"a": "11" * 16, "b": "22" * 16, "c": "33" * 16}


def write_config(path: Path) -> None:
    lines = ["[data]", f'dir = "{path.parent / "data"}"']
    for n, (name, key) in enumerate(RELAYS.items(), 1):
        lines += ["[[publisher.relays]]", f'name = "{name}"', f'server = "relay{n}.example.org"',
                  "port = 443", f'key = "{key}"', 'domain = "example.com"']  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def write_list(store: Path, version: int, relays: list[str], config_path: Path) -> None:
    """A list carrying ``relays`` (all that ``healthy_relays`` reads of it)."""
    config = load_config(config_path)
    entries = [
        {
            "domain": r.domain, "last_ok": rfc3339(T0), "port": r.port, "ports_tried": [r.port],
            "rtt_ms": 10, "secret": r.secret_hex, "server": r.server, "tags": [],
            "type": "mtproto",
        }
        for r in publisher_relays(config)
        if r.name in relays
    ]  # fmt: skip
    document = signing.ListDocument(
        publisher="kopir.test", version=version, issued=rfc3339(T0),
        expires=rfc3339(T0 + 86400), proxies=tuple(entries),
    )  # fmt: skip
    store.mkdir(parents=True, exist_ok=True)
    (store / "list.json").write_bytes(document.encode())


def test_a_campaign_after_a_relay_left_the_list_sends_the_previous_set(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path)
    config = load_config(path)
    lists = config.in_data(config.publisher.dir)
    write_list(lists, 1, list(RELAYS), path)
    numbers = smsgw.NumberKey(os.urandom(32))
    with subscriber_store(config, numbers) as store:
        store.add(PHONE, "ru", "established", "test", T0)
    key = signing.SecretKey.generate()
    publisher = Publisher(config, key=key, log_store=None, number_key=numbers)
    epoch = epoch_of(T0, config.distribution.epoch)

    first_parts, first_people = publisher._distribute(1, epoch, T0)
    assert first_people == 1 and first_parts >= 2  # k = 2 links
    with open_distributor(config, publisher_relays(config)) as record:
        given = record.assign(PHONE, "established", T0 + 1).relays  # the same set, unchanged
    assert len(given) == 2

    write_list(lists, 2, [n for n in RELAYS if n != given[0]], path)  # given[0] is burned
    parts, people = publisher._distribute(2, epoch, T0 + 60)
    assert (parts, people) == (first_parts, 1)  # the same two relays' links, queued again
    with smsgw.Queue(config.in_data(config.sms.queue)) as queue:
        campaigns = set(queue.counts_by_campaign())
    assert {f"list-v2-e{epoch}-1", f"list-v2-e{epoch}-2"} <= campaigns
