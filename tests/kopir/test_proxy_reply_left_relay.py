"""The answer to an inbound SMS "PROXY" after a relay of the sender's set has left the list.

The subscriber got their set from the publisher's SMS campaign (``kopir run --once`` in the
bot tests' site). Then the relay behind their first link stops working: a real probe of the
relay on loopback finds it failing, and the publisher's ``publish`` signs and logs list v2
without it, while it stays in the config. Within ``[distribution] interval`` the subscriber
texts PROXY. It arrives as a ``deliver_sm`` from a scripted SMSC on loopback, through
``kopir run``'s own SMS worker wiring (``Job._start_worker``: ``proxy_reply`` behind
``subscriber_commands``), and the rate limit gives the subscriber their previous set again. So
the reply is a signed link to that first relay. Before f1582d1 the reply raised "no relay named
..." in the worker's inbound handler, and the subscriber got no answer at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest

import signing
import smsgw
from kopir.config import Config
from kopir.distcmd import healthy_relays
from kopir.listcmd import list_policy, publisher_relays
from kopir.relaycmd import relay_settings, start_local_dc, start_relay
from kopir.runner import Job
from kopir.setup import prepare
from kopir.signcmd import find_links
from kopir.smscmd import number_key
from proxylist import ListStore, probe_relays, publish
from smsgw.compose import LINK_TEMPLATE
from smsgw.segment import DATA_CODING, ESM_CLASS_UDHI, Encoding, Part, decode
from tests.kopir.botsite import bot_template, site_config
from tests.kopir.fakebotapi import MAX_WAIT
from tests.kopir.test_run import outbox_texts
from tests.smsgw.smsc import ScriptedSmsc, Submitted

__all__ = ["bot_template"]  # the fixture, used by name


def relay_of(config: Config, link: str) -> str:
    """The name of the configured relay a link dials."""
    parsed = signing.parse_link(link)
    [name] = [
        r.name
        for r in publisher_relays(config)
        if (r.server, r.port, r.secret_hex) == (parsed.server, parsed.port, parsed.secret)
    ]
    return name


async def republish_without(config: Config, gone: str) -> None:
    """The relay on loopback serves every secret but ``gone``'s; the publisher's probe finds
    ``gone`` failing and ``publish`` signs and logs the next list version without it."""
    kept = [s for s in config.relay.secrets if f"local:{s.name}" != gone]
    assert len(kept) == len(config.relay.secrets) - 1
    serving = dataclasses.replace(config, relay=dataclasses.replace(config.relay, secrets=kept))
    settings, local_dc = await start_local_dc(serving, relay_settings(serving))
    relay = await start_relay(serving, settings)
    try:
        relays = publisher_relays(config)
        pub = config.publisher
        results = await probe_relays(
            relays, timeout=pub.probe_timeout, concurrency=pub.probe_concurrency
        )
    finally:
        await relay.stop()
        if local_dc is not None:
            await local_dc.stop()
    assert {r.relay.name for r in results if not r.ok} == {gone}
    setup = prepare(config)
    store = ListStore(config.in_data(pub.dir))
    published = publish(store, relays, results, list_policy(config), time.time(),
                        key=setup.key, log=setup.log)  # fmt: skip
    assert published.build.changed and published.build.document.version == 2
    healthy = {r.name for r in healthy_relays(config)}
    assert gone not in healthy and len(healthy) == len(relays) - 1  # gone from the list ...
    assert gone in {r.name for r in relays}  # ... and still configured


def sms_text(submits: list[Submitted], to: str) -> str | None:
    """The text of the (one, perhaps concatenated) SMS submitted to ``to``, once every part
    has come; None before."""
    parts: dict[int, str] = {}
    total = 1
    for submit in submits:
        sm = submit.sm
        if sm.destination_addr != to.removeprefix("+"):
            continue
        udh, body = b"", sm.short_message
        if sm.esm_class & ESM_CLASS_UDHI:
            udh, body = body[: body[0] + 1], body[body[0] + 1 :]
        encoding: Encoding = "ucs2" if sm.data_coding == DATA_CODING["ucs2"] else "gsm7"
        parts[udh[5] if udh else 1] = decode(Part(udh, body, "", encoding))
        total = udh[4] if udh else 1
    if not parts or len(parts) < total:
        return None
    return "".join(parts[n] for n in sorted(parts))


def trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings and errors logged so far, with the exception of each (why no reply came)."""
    return [
        f"{r.getMessage()}: {r.exc_info[1]!r}" if r.exc_info else r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ]


@pytest.mark.asyncio
async def test_proxy_sms_after_a_relay_left_the_list_answers_with_the_previous_set(
    bot_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = site_config(bot_template, tmp_path)
    number = config.subscribers.test_numbers[0]
    trust = signing.parse_trust_root(config.in_data(config.signing.trust).read_bytes())
    # What the campaign of list v1 sent this subscriber: their set, first relay first, one
    # link message each (the outbox holds the parts back to back).
    sent = outbox_texts(config.data_dir)[number_key(config).ref(number)]
    campaign = sent.split(LINK_TEMPLATE.format(link=""))[1:]
    assert len(campaign) == config.distribution.k == 2
    first = relay_of(config, campaign[0])

    await republish_without(config, first)

    smsc = await ScriptedSmsc().start()
    smpp = dataclasses.replace(config.sms.smpp, port=smsc.port, system_id="kopir",
                               password=smsc.script.password)  # fmt: skip
    config = dataclasses.replace(config, sms=dataclasses.replace(config.sms, backend="smpp",
                                                                 smpp=smpp))  # fmt: skip
    job = Job(config, prepare(config), smsgw.make_backend(config.sms, config.data_dir))
    stop = asyncio.Event()
    try:
        async with job.stack:
            await job._start_worker()  # the SMS worker exactly as ``kopir run`` wires it
            running = asyncio.create_task(job.worker.run(stop))
            try:
                await smsc.wait_for(lambda: "bind_transceiver" in smsc.commands())
                await smsc.send_inbound(number.removeprefix("+"), b"PROXY")
                deadline = time.monotonic() + MAX_WAIT  # a hang guard, not a timing check
                while sms_text(smsc.submits, number) is None and not trouble(caplog):
                    assert time.monotonic() < deadline, "no reply and nothing logged"
                    await asyncio.sleep(0.02)
            finally:
                stop.set()
                await running
    finally:
        await smsc.close()

    reply = sms_text(smsc.submits, number)
    assert reply is not None, trouble(caplog)
    [link] = find_links(reply)
    assert reply == LINK_TEMPLATE.format(link=link)  # links, not "New links are on their way."
    verified = signing.verify_link(link, trust, time.time())
    assert verified.kid == signing.parse_link(campaign[0]).kid  # the site's online key
    assert relay_of(config, link) == first  # their own first relay, though it left the list
    assert not trouble(caplog)
