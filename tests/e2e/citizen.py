"""The citizen's phone in the rehearsal; runs inside the ``citizen`` namespace, behind its
firewall.

It does what a careful citizen's Telegram would: take the proxy link out of an SMS, check it
against the trust root they were given before the shutdown, and only if it verifies, connect
through the relay as Telegram does (fake-TLS, then ``req_pq_multi`` to the DC; that is exactly
``proxylist.probe_relay`` on the relay the link names). A link that fails verification is
refused before any packet leaves the phone.

Usage::

    python -m tests.e2e.citizen tap  --trust T (--outbox DIR | --sms FILE) [--timeout S]
    python -m tests.e2e.citizen dial --trust T (--outbox DIR | --sms FILE) --to HOST:PORT ...

``tap`` verifies the SMS's link and, if it is valid, connects to it. ``dial`` verifies it
too, then tries the same relay client on each other ``HOST:PORT``, all at once. Each prints
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import signing
from kopir.listcmd import result_json
from kopir.signcmd import find_links
from proxylist import Relay, probe_port, probe_relay, relay_from_link
from smsgw.outbox import read_outbox


def sms_text(args: argparse.Namespace) -> str:
    """The one SMS on the phone: from a file, or reassembled from the outbox by recipient."""
    if args.sms:
        return Path(args.sms).read_text(encoding="utf-8")
    texts: dict[str, str] = {}
    for part in read_outbox(Path(args.outbox)):
        texts[str(part["to_ref"])] = texts.get(str(part["to_ref"]), "") + str(part["text"])
    if len(texts) != 1:
        raise SystemExit(f"expected one recipient in the outbox, found {len(texts)}")
    return next(iter(texts.values()))


def checked_link(args: argparse.Namespace) -> tuple[dict[str, Any], Relay | None]:
    """The verdict on the SMS's link, and its relay only when it verified."""
    links = find_links(sms_text(args))
    if len(links) != 1:
        raise SystemExit(f"expected one proxy link in the SMS, found {len(links)}")
    trust = signing.parse_trust_root(Path(args.trust).read_bytes())
    try:
        link = signing.verify_link(links[0], trust, time.time())
    except signing.VerificationError as exc:
        return {"link": links[0], "verified": False, "reason": exc.reason}, None
    key = trust.link_keys[link.kid or ""]
    verdict = {"link": links[0], "verified": True, "key": key.name}
    return verdict, relay_from_link(links[0])


async def tap(args: argparse.Namespace) -> dict[str, Any]:
    verdict, relay = checked_link(args)
    if relay is None:
        return {**verdict, "connected": False}
    result = await probe_relay(relay, timeout=args.timeout)
    return {**verdict, "connected": True, "probe": result_json(result)}


async def dial(args: argparse.Namespace) -> dict[str, Any]:
    verdict, relay = checked_link(args)
    if relay is None:
        return {**verdict, "tries": {}}

    async def one(target: str) -> list[dict[str, Any]]:
        host, _, port = target.rpartition(":")
        other = replace(relay, server=host, port=int(port), alt_ports=())
        result = await probe_port(other, int(port), timeout=args.timeout)
        return [{"stage": s.stage, "ok": s.ok, "detail": s.detail} for s in result.stages]

    results = await asyncio.gather(*(one(target) for target in args.to))
    return {**verdict, "tries": dict(zip(args.to, results, strict=True))}


def main() -> None:
    parser = argparse.ArgumentParser(prog="citizen")
    parser.add_argument("action", choices=["tap", "dial"])
    parser.add_argument("--trust", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--outbox")
    source.add_argument("--sms")
    parser.add_argument("--to", nargs="*", default=[])
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    work = tap if args.action == "tap" else dial
    print(json.dumps(asyncio.run(work(args)), sort_keys=True))


if __name__ == "__main__":
    main()
