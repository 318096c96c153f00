"""``kopir list assign|exposed``: per-recipient relays from the command line.

``assign`` gives each recipient its own ``[distribution] k`` relays among those healthy in the
current list, records the cohort (a keyed hash, never the recipient), and prints signed links
(``[signing] key``); an operator uses it to answer one person, and ``kopir run`` does the same
for every subscriber. ``exposed`` reports which cohorts were given a burned relay. The work is
done in ``proxylist.distribute`` and ``proxylist.handout``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import signing
from kopir.config import Config, ConfigError, load_config
from kopir.listcmd import publisher_relays
from kopir.output import CommandFailed, emit
from proxylist import Distributor, LinkBook, ListStore, Relay, generate_secret, load_secret
from smsgw.errors import SmsError
from smsgw.numbers import normalize

POOLS = ("established", "new")
PREFIXES = ("tg:", "poster:")


def healthy_relays(config: Config) -> list[Relay]:
    """The configured relays that the current list carries (matched by server and secret)."""
    store = ListStore(config.in_data(config.publisher.dir))
    if not store.path.exists():
        raise CommandFailed(f"no list yet at {store.path}; run: kopir list build -c {config.path}")
    document = signing.parse_list(store.path.read_bytes())
    listed = {(p["server"], p["secret"]) for p in document.proxies}
    return [r for r in publisher_relays(config) if (r.server, r.secret_hex) in listed]


def link_book(config: Config, key: signing.SecretKey) -> LinkBook:
    """A book that signs links for every configured relay, not only the healthy ones: the
    rate limit may give a recipient their previous set again, with a relay in it that has
    since left the list (``proxylist.distribute``), and that set is what they get."""
    expiry, scheme = config.signing.link_expiry, config.signing.link_scheme
    return LinkBook(key, publisher_relays(config), expiry, scheme)


def pools_of(config: Config, relays: list[Relay]) -> dict[str, list[str]]:
    tag = config.distribution.new_pool_tag
    return {
        "established": [r.name for r in relays if tag not in r.tags],
        "new": [r.name for r in relays if tag in r.tags],
    }


def open_distributor(config: Config, relays: list[Relay], k: int | None = None) -> Distributor:
    """The ring's record, with the secret made on first use (0600, never replaced)."""
    dist = config.distribution
    secret_path = config.in_data(dist.secret)
    if not secret_path.exists():
        secret_path.parent.mkdir(parents=True, exist_ok=True)
        generate_secret(secret_path)
    return Distributor(
        config.in_data(dist.record),
        load_secret(secret_path),
        pools_of(config, relays),
        k=k or dist.k,
        epoch_seconds=dist.epoch,
        interval=dist.interval,
    )


def recipient_id(text: str, region: str, position: int = 1) -> str:
    """``tg:<id>`` and ``poster:<batch>`` as given; anything else is a phone number in E.164.

    A refusal names the recipient by its ``position`` on the command line, never by what was
    typed: that may be a phone number, which is not to be echoed (to a terminal, a log or a
    cron mail). ``normalize`` says why without saying what.
    """
    if text.startswith(PREFIXES):
        return text
    try:
        return normalize(text, region)
    except SmsError as exc:
        raise CommandFailed(
            f"recipient {position} is not tg:<id>, poster:<batch> or a phone number: {exc}", 2
        ) from None


def list_assign(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    region = config.subscribers.default_region
    ids = [recipient_id(r, region, n) for n, r in enumerate(args.recipient, 1)]
    relays = healthy_relays(config)
    key_path = Path(args.key) if args.key else config.in_data(config.signing.key)
    key = signing.load_secret_key(key_path)
    book = link_book(config, key)
    now = time.time()
    with open_distributor(config, relays) as record:
        given = record.assign_many(ids, args.pool, now)
    out = [
        {
            "recipient": rid,
            "cohort": a.cohort,
            "pool": a.pool,
            "epoch": a.epoch,
            "relays": list(a.relays),
            "limited": a.limited,
            "links": list(book.links(book.signable(a.relays), now)),
        }
        for rid, a in zip(ids, given, strict=True)
    ]
    emit(args.json, "\n".join(_assign_text(item) for item in out), {"assignments": out})
    return 0


def _assign_text(item: dict[str, Any]) -> str:
    note = " (rate-limited: the last set again)" if item["limited"] else ""
    head = f"{item['recipient']}: {', '.join(item['relays'])}{note}"
    return "\n".join([head, *(f"  {link}" for link in item["links"])])


def list_exposed(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    names = {r.name for r in publisher_relays(config)}
    if args.relay not in names:
        raise ConfigError(f"{config.path}: no relay named {args.relay!r} in [publisher]")
    record_path = config.in_data(config.distribution.record)
    if not record_path.exists():
        raise CommandFailed(f"no distribution record at {record_path}; nothing was handed out")
    secret = load_secret(config.in_data(config.distribution.secret))
    with Distributor(record_path, secret, {}, k=config.distribution.k) as record:
        report = record.exposed(args.relay)
    rows = [
        {"cohort": e.cohort, "epoch": e.epoch, "pool": e.pool, "count": e.count}
        for e in report.entries
    ]
    summary = (
        f"{args.relay}: given {report.total} times to {len(report.cohorts)} cohorts"
        f" in {len(report.epochs)} epochs"
    )
    lines = [summary]
    lines += [f"  {r['cohort']}  epoch {r['epoch']}  {r['pool']}  x{r['count']}" for r in rows]
    data = {"relay": args.relay, "total": report.total, "cohorts": rows}
    emit(args.json, "\n".join(lines), data)
    return 0


def add_actions(actions: Any, common: Any) -> None:
    """Register ``assign`` and ``exposed`` under ``kopir list``."""
    assign = actions.add_parser(
        "assign", parents=[common], help="give recipients their own relays, as signed links"
    )
    assign.add_argument("recipient", nargs="+", help="phone number, tg:<user id> or poster:<batch>")
    assign.add_argument("--pool", choices=POOLS, default="established", help="recipient pool")
    assign.add_argument("--key", help="secret key to sign with (default: [signing] key)")
    assign.add_argument("-c", "--config", default="config.toml", help="config file")
    assign.set_defaults(func=list_assign)

    exposed = actions.add_parser(
        "exposed", parents=[common], help="which cohorts were given a (burned) relay"
    )
    exposed.add_argument("relay", help="the relay's name in [publisher]")
    exposed.add_argument("-c", "--config", default="config.toml", help="config file")
    exposed.set_defaults(func=list_exposed)


__all__ = ["add_actions", "healthy_relays", "link_book", "open_distributor"]
