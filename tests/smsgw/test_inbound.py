"""Inbound commands through a running worker and a backend that receives: the scripted SMSC
sends deliver_sm, the Android app's webhook posts sms:received. STOP removes the subscriber and
the reply goes out through the same backend; PROXY replies with what the application gives;
replies are rate-limited per sender; a sender that is not a number is ignored."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from smsgw.backend import Backend, Inbound
from smsgw.backends import webhook_routes
from smsgw.commands import REPLIES, RateLimit
from smsgw.errors import QueueError
from smsgw.numbers import NumberKey, create_key_file
from smsgw.providers import AndroidGatewayBackend
from smsgw.queue import Message, Queue, State
from smsgw.segment import decode, segment
from smsgw.smpp import SmppBackend, SmppSettings
from smsgw.subscribers import SubscriberStore
from smsgw.webhooks import ANDROID_PATH, serve_webhooks
from smsgw.worker import Worker, subscriber_commands
from tests.smsgw.fakeproviders import (
    ANDROID_PASSWORD,
    ANDROID_USER,
    ANDROID_WEBHOOK_KEY,
    android_event,
    post_android,
    running_providers,
)
from tests.smsgw.smsc import ScriptedSmsc

SUBSCRIBER = "+77012345678"
STRANGER = "+77019876543"
THIRD = "+77015550000"
LINKS = (
    "Telegram proxy: https://t.me/proxy?server=relay.example.kz&port=443&secret=ee"
    + "0123456789abcdef" * 2
    + "&exp=2026112511&sig="
    + "A" * 86
)


@dataclass
class Gateway:
    """A queue, a subscriber store and a worker running inbound commands."""

    queue: Queue
    store: SubscriberStore
    key: NumberKey
    asked: list[tuple[str, str]] = field(default_factory=list)
    seen: list[Inbound] = field(default_factory=list)

    def links(self, number: str, language: str) -> str | None:
        self.asked.append((self.key.short_ref(number), language))
        return LINKS

    def worker(self, backend: Backend) -> Worker:
        commands = subscriber_commands(self.store, self.key, self.links, RateLimit(300.0))
        return Worker(self.queue, self.key, backend, commands=commands, on_inbound=self.seen.append)


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    key = create_key_file(tmp_path / "subscribers.key")
    store = SubscriberStore(tmp_path / "subscribers.db", key)
    store.add(SUBSCRIBER, "kk", "established", "test", 1.0)
    store.add(THIRD, "en", "new", "test", 1.0)
    gateway = Gateway(Queue(tmp_path / "queue.db"), store, key)
    yield gateway
    gateway.queue.close()
    store.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def smsc() -> AsyncIterator[ScriptedSmsc]:
    server = await ScriptedSmsc().start()
    yield server
    await server.close()


def smpp(port: int) -> SmppBackend:
    return SmppBackend(
        SmppSettings(host="127.0.0.1", port=port, system_id="GSMSGW", password="secret",
                     timeout=5.0, reconnect_min=0.05, reconnect_max=0.2, source_addr="KOPIR")
    )  # fmt: skip


@pytest.mark.asyncio
async def test_smpp_inbound_stop_removes_and_replies_proxy_sends_links(
    smsc: ScriptedSmsc, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = gateway.worker(smpp(smsc.port))
    await worker.start()
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop, idle=5.0))
    try:
        await until(lambda: "bind_transceiver" in smsc.commands())
        await smsc.send_inbound(SUBSCRIBER[1:], b"STOP")
        await until(lambda: len(smsc.submits) == 1)
        assert gateway.store.count() == 1  # the subscriber is gone; THIRD remains
        [reply] = smsc.submits
        assert reply.sm.destination_addr == SUBSCRIBER[1:]
        assert reply.sm.data_coding == 8  # the stop reply in Kazakh, the subscriber's language
        assert reply.sm.short_message.decode("utf-16-be") == REPLIES["stop"]["kk"]

        await smsc.send_inbound(STRANGER[1:], "ПРОКСИ".encode("utf-16-be"), data_coding=8)
        await smsc.send_inbound(STRANGER[1:], b"PROXY")  # within the interval: no reply
        await smsc.send_inbound("Beeline", b"HELP", ton=5)  # not a number: ignored
        await smsc.send_inbound(THIRD[1:], b"what is this?")
        await until(lambda: len(smsc.submits) == 1 + 2 + 1)  # 2 parts of links, then help
    finally:
        stop.set()
        await running
        await worker.stop()
    links = [s for s in smsc.submits[1:] if s.sm.destination_addr == STRANGER[1:]]
    text = "".join(decode(p) for p in segment(LINKS).parts)
    assert len(links) == segment(LINKS).count == 2 and text == LINKS
    assert [p.sm.short_message[6:] for p in links] == [p.body for p in segment(LINKS).parts]
    assert gateway.asked == [(gateway.key.short_ref(STRANGER), "ru")]
    [help_reply] = [s for s in smsc.submits if s.sm.destination_addr == THIRD[1:]]
    assert help_reply.sm.short_message.decode() == REPLIES["help"]["en"]
    assert len(gateway.seen) == 5  # the application still sees every inbound SMS
    assert gateway.queue.counts()[State.ACCEPTED] == 4
    for number in (SUBSCRIBER, STRANGER, THIRD):
        assert number[2:] not in caplog.text


@pytest.mark.asyncio
async def test_android_sms_received_webhook_removes_and_replies(gateway: Gateway) -> None:
    async with running_providers() as phone:
        backend = AndroidGatewayBackend(
            phone.url, ANDROID_USER, ANDROID_PASSWORD, webhook_key=ANDROID_WEBHOOK_KEY
        )
        worker = gateway.worker(backend)
        await worker.start()
        server = await serve_webhooks(webhook_routes(backend))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop, idle=5.0))
        events = server.url + ANDROID_PATH
        try:
            received = {"messageId": "in1", "message": "стоп", "phoneNumber": SUBSCRIBER}
            assert await post_android(events, android_event("sms:received", received)) == 204
            await until(lambda: len(phone.requests) == 1)
            [sent] = phone.requests
            assert sent.json == {"message": REPLIES["stop"]["ru"], "phoneNumbers": [SUBSCRIBER]}
            assert gateway.store.count() == 1
            [message] = [m for m in _all(gateway.queue) if m.state == State.ACCEPTED]
            delivered = {"messageId": message.provider_id, "phoneNumber": SUBSCRIBER}
            assert await post_android(events, android_event("sms:delivered", delivered)) == 204
            assert gateway.queue.get(message.id).state == State.DELIVERED
        finally:
            stop.set()
            await running
            await worker.stop()
            await server.close()


def _all(queue: Queue) -> list[Message]:
    found = []
    for message_id in itertools.count(1):
        try:
            found.append(queue.get(message_id))
        except QueueError:
            return found
    raise AssertionError("unreachable")
