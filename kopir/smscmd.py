"""``kopir sms send|subscribers|campaign|status``: SMS from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import signing
import smsgw
from kopir.config import Config, ConfigError, load_config
from kopir.output import EXIT_USAGE, CommandFailed, emit, warn
from kopir.signcmd import load_trust
from signing.fileio import read_text
from smsgw.backend import Backend
from smsgw.compose import instruction_message, link_message
from smsgw.worker import Worker, enqueue


def number_key(config: Config) -> smsgw.NumberKey:
    """The subscriber key (``[subscribers] key``), made on first use (0600)."""
    path = config.in_data(config.subscribers.key)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return smsgw.create_key_file(path)
    return smsgw.load_key_file(path)


def subscriber_store(config: Config, key: smsgw.NumberKey | None = None) -> smsgw.SubscriberStore:
    path = config.in_data(config.subscribers.db)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return smsgw.SubscriberStore(
        path, key or number_key(config), default_region=config.subscribers.default_region
    )


def _queue(config: Config) -> smsgw.Queue:
    path = config.in_data(config.sms.queue)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return smsgw.Queue(path)


def backend(config: Config) -> Backend:
    """The configured backend; a mistake in its table is a ``ConfigError`` (exit 2)."""
    try:
        return smsgw.make_backend(config.sms, config.data_dir)
    except smsgw.BackendConfigError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None


REASONS = {
    "malformed": "malformed",
    "unknown-key": "unknown key",
    "revoked-key": "revoked key",
    "bad-signature": "bad signature",
    "expired": "expired",
}
"""``signing.verify_link`` reasons as people read them (``unsigned`` is told apart here)."""


def link_problem(text: str, trust: signing.TrustRoot, now: float) -> str | None:
    """Why ``text`` may not be sent, or ``None`` when it verifies against ``trust``.

    The check is ``kopir verify link``'s (``signing.verify_link``); a well-formed link without
    ``kid``, ``exp`` and ``sig`` is reported as unsigned rather than malformed.
    """
    try:
        link = signing.parse_link(text)
        if link.sig is None:
            return "unsigned (sign it with kopir sign link)"
        signing.verify_link(link, trust, now)
    except signing.VerificationError as exc:
        reason = REASONS.get(exc.reason, exc.reason)
        return f"{reason} ({exc.detail})" if exc.detail else reason
    return None


def _trust_root(config: Config) -> tuple[Path, signing.TrustRoot]:
    """The trust root links are checked against: ``[signing] trust``, as ``kopir run`` uses."""
    path = config.in_data(config.signing.trust)
    try:
        return path, load_trust(path)
    except signing.SigningError as exc:
        hint = "" if path.exists() else " (kopir init makes one)"
        raise CommandFailed(f"cannot check the links: {exc}{hint}", code=EXIT_USAGE) from None


def check_links(config: Config, links: list[tuple[str, str]]) -> None:
    """Refuse the whole command unless every link verifies against the config's trust root.

    ``links`` holds (where, link) pairs, ``where`` naming the link in messages (``--link``,
    ``FILE line N``). Each bad link gets one line on stderr; the last line says nothing was sent.
    """
    trust_path, trust = _trust_root(config)
    now = time.time()
    bad = [
        {"where": where, "problem": problem}
        for where, text in links
        if (problem := link_problem(text, trust, now)) is not None
    ]
    if not bad:
        return
    data = {"bad_links": bad, "trust": str(trust_path)}
    if len(links) == 1:
        raise CommandFailed(f"{bad[0]['where']}: {bad[0]['problem']}; nothing sent", data=data)
    for entry in bad:
        warn(f"{entry['where']}: {entry['problem']}")
    raise CommandFailed(
        f"{len(bad)} of {len(links)} links do not verify against {trust_path}; nothing sent",
        data=data,
    )


async def _send_all(
    config: Config, queue: smsgw.Queue, key: smsgw.NumberKey, chosen: Backend
) -> Any:
    worker = Worker(
        queue, key, chosen, window=config.sms.window, retry_delay=config.sms.retry_delay
    )
    await worker.start()
    try:
        return await worker.drain()
    finally:
        await worker.stop()
        await asyncio.sleep(0)  # let the last receipts be recorded


def sms_send(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    number = smsgw.normalize(args.to, config.subscribers.default_region)
    if args.link:
        check_links(config, [("--link", args.link.strip())])
    message = link_message(args.link) if args.link else smsgw.segment(args.text)
    chosen = backend(config)  # a config mistake must stop us before anything is queued
    key, queue = number_key(config), _queue(config)
    try:
        ids = enqueue(
            queue, key, number, args.campaign or f"send-{time.time_ns()}", message, time.time()
        )
        asyncio.run(_send_all(config, queue, key, chosen))
        states = [queue.get(i) for i in ids]
    finally:
        queue.close()
    bad = [m for m in states if m.state not in ("accepted", "delivered")]
    data = {
        "to": key.short_ref(number),
        "parts": len(ids),
        "states": [str(m.state) for m in states],
    }
    if bad:
        raise CommandFailed(f"not sent: {bad[0].state} ({bad[0].last_error})", data=data)
    emit(
        args.json,
        f"sent {len(ids)} part(s) to {key.short_ref(number)} via {config.sms.backend}",
        data,
    )
    return 0


def sms_status(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    queue = _queue(config)
    try:
        counts = {str(k): v for k, v in queue.counts().items()}
        campaigns = {
            c: {str(k): v for k, v in by.items() if v}
            for c, by in queue.counts_by_campaign().items()
        }
    finally:
        queue.close()
    lines = ["state       messages"] + [f"{state:<11} {n}" for state, n in counts.items()]
    lines += [
        f"campaign {name}: " + ", ".join(f"{s} {n}" for s, n in by.items())
        for name, by in sorted(campaigns.items())
    ]
    emit(args.json, "\n".join(lines), {"states": counts, "campaigns": campaigns})
    return 0


def sms_campaign(args: argparse.Namespace) -> int:
    """One link per subscriber, from a file of signed links (used in turn); every link must
    verify against the trust root, else nothing is sent."""
    config = load_config(Path(args.config))
    try:
        lines = read_text(Path(args.links), "links file").splitlines()
    except signing.SigningError as exc:
        raise CommandFailed(str(exc), code=EXIT_USAGE) from None
    numbered = [(f"{args.links} line {n}", line.strip()) for n, line in enumerate(lines, 1)]
    numbered = [(where, link) for where, link in numbered if link]
    if not numbered:
        raise CommandFailed(f"{args.links} has no links", code=EXIT_USAGE)
    check_links(config, numbered)
    links = [link for _, link in numbered]
    name = args.name or f"campaign-{time.strftime('%Y%m%d%H%M%S')}"
    chosen = backend(config)
    key, queue = number_key(config), _queue(config)
    now = time.time()
    rows: list[smsgw.NewMessage] = []
    with subscriber_store(config) as store:
        subscribers = list(store.iter_all())
        for i, sub in enumerate(subscribers):
            link = link_message(links[i % len(links)])
            rows += smsgw.new_messages(key, sub.number, name, link)
            if args.instructions:
                help_text = instruction_message(sub.language)
                rows += smsgw.new_messages(key, sub.number, f"{name}-help", help_text)
    queue.enqueue_many(rows, now)  # one transaction: enqueueing twice still sends once
    try:
        report = asyncio.run(_send_all(config, queue, key, chosen))
    finally:
        queue.close()
    emit(
        args.json,
        f"campaign {name}: {len(subscribers)} subscribers, {report.accepted} parts "
        f"accepted, {report.retried} to retry, {report.failed} failed",
        {
            "campaign": name,
            "subscribers": len(subscribers),
            "accepted": report.accepted,
            "retried": report.retried,
            "failed": report.failed,
        },
    )
    return 0 if not report.failed else 1


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        width = 30
        filled = width * done // total
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr)
        if done >= total:
            print(file=sys.stderr)


def sms_subscribers(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    if args.action in ("add", "remove") and not args.number:
        raise CommandFailed(f"kopir sms subscribers {args.action} needs a NUMBER", code=2)
    if args.action == "import" and not args.csv:
        raise CommandFailed("kopir sms subscribers import needs --csv FILE", code=2)
    with subscriber_store(config) as store:
        if args.action == "add":
            ref = store.add(args.number, args.lang, args.pool, args.consent, time.time())
            emit(args.json, f"added {ref[:12]}", {"ref": ref[:12]})
        elif args.action == "import":
            report = store.import_csv(
                Path(args.csv), args.lang, args.pool, args.consent, time.time(), _progress
            )
            for bad in report.bad:
                print(f"kopir: {args.csv}: {bad}", file=sys.stderr)
            emit(
                args.json,
                f"{report.added} added, {report.updated} updated, {report.rejected} rejected",
                {"added": report.added, "updated": report.updated, "rejected": report.rejected},
            )
        elif args.action == "remove":
            removed = store.remove(args.number)
            emit(args.json, "removed" if removed else "not subscribed", {"removed": removed})
        elif args.action == "purge":
            if not args.yes:
                raise CommandFailed("purge deletes every subscriber: add --yes to confirm", code=2)
            emit(args.json, f"purged {store.purge()} subscribers", {"purged": True})
        else:
            emit(
                args.json,
                f"{store.count()} subscribers",
                {
                    "count": store.count(),
                    "by_language": store.count_by("language"),
                    "by_pool": store.count_by("pool"),
                },
            )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    sms = sub.add_parser("sms", help="SMS: send, subscribers, campaigns, status").add_subparsers(
        dest="sms_command", required=True
    )

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sms.add_parser(name, parents=[common], help=help_text)
        parser.add_argument("-c", "--config", default="config.toml", help="config file")
        return parser

    send = with_config("send", "send one message (exit 0 once accepted)")
    send.add_argument("--to", required=True, help="phone number, e.g. +77012345678")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="the text (any language)")
    what.add_argument(
        "--link",
        help="a signed link, which must verify against [signing] trust; sent as a GSM-7 "
        "link message",
    )
    send.add_argument("--campaign", help="campaign name (default: one of its own)")
    send.set_defaults(func=sms_send)

    status = with_config("status", "messages per state and per campaign")
    status.set_defaults(func=sms_status)

    campaign = with_config("campaign", "send a link to every subscriber")
    campaign.add_argument(
        "--links",
        required=True,
        help="file with one signed link per line; all must verify against [signing] trust",
    )
    campaign.add_argument("--name", help="campaign name (default: campaign-<time>)")
    campaign.add_argument(
        "--instructions",
        action="store_true",
        help="also send instructions in each subscriber's language",
    )
    campaign.set_defaults(func=sms_campaign)

    subs = with_config("subscribers", "the encrypted subscriber store")
    subs.add_argument("action", choices=("add", "import", "remove", "purge", "count"))
    subs.add_argument("number", nargs="?", help="add/remove: the phone number")
    subs.add_argument("--csv", help="import: CSV of number[,language[,pool]]")
    subs.add_argument("--lang", default="ru", choices=("kk", "ru", "en"))
    subs.add_argument("--pool", default="new", choices=("established", "new"))
    subs.add_argument("--consent", default="cli", help="where consent was given")
    subs.add_argument("--yes", action="store_true", help="purge: confirm")
    subs.set_defaults(func=sms_subscribers)
