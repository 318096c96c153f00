"""A public poster is made once and served again, over real HTTP on 127.0.0.1.

Making a poster hands the batch its relays through the distribution ring, which records the
hand-out in the distribution record (a SQLite write), and signs every link. A stranger asking
in a loop must cost neither: the page is kept until the published list changes or half the
link expiry has passed (``kopir.web.postercache``). The record counts every hand-out, so its
totals count the pages made.
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import signing
from kopir.distcmd import open_distributor
from kopir.listcmd import list_policy
from kopir.web.postercache import PosterCache
from proxylist import ListStore, publish
from tests.kopir.webhelpers import (
    NOW,
    DataSite,
    Reply,
    Served,
    check_headers,
    make_data,
    probe,
)

POSTER = "/poster?batch=lobby"
EXPIRY = 72 * 3600  # [signing] link_expiry by default
HALF = EXPIRY // 2


@pytest.fixture
def site(tmp_path: Path) -> DataSite:
    return make_data(tmp_path)


@pytest.fixture
def served(site: DataSite) -> Iterator[Served]:
    server = Served(site.config)
    yield server
    server.close()


def record_bytes(site: DataSite) -> bytes:
    """The distribution record and its write-ahead log, as they are on disk."""
    path = site.config.in_data(site.config.distribution.record)
    return b"".join(p.read_bytes() if p.exists() else b"-" for p in (path, Path(f"{path}-wal")))


def handed_out(site: DataSite) -> int:
    """How many relays the record says were handed out in all (one page: one per link)."""
    if not site.config.in_data(site.config.distribution.record).exists():
        return 0
    with open_distributor(site.config, list(site.relays)) as record:
        return sum(record.exposed(relay.name).total for relay in site.relays)


def links(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'href="(tg://proxy\?[^"]+)"', page)]


def valid_at(served: Served, page: str, now: float) -> bool:
    """Every link of ``page`` verifies against the served trust root at ``now``."""
    trust = signing.parse_trust_root(served.get("/trust.json").body)
    try:
        for text in links(page):
            signing.verify_link(text, trust, now)
    except signing.VerificationError:
        return False
    return bool(links(page))


def test_a_second_request_gets_the_same_bytes_and_writes_nothing(
    site: DataSite, served: Served
) -> None:
    first = served.get(POSTER)
    assert first.status == 200, first.text[:300]
    made = handed_out(site)
    assert made == len(links(first.text)) == 3
    before = record_bytes(site)
    second = served.get(POSTER)
    assert second.status == 200 and second.body == first.body
    assert record_bytes(site) == before
    assert handed_out(site) == made
    check_headers(second)
    assert second.headers["Content-Security-Policy"] == first.headers["Content-Security-Policy"]
    assert second.headers["Cache-Control"] == "public, max-age=300"


def test_a_new_list_version_makes_a_new_page(tmp_path: Path) -> None:
    site = make_data(tmp_path, lists=2)  # the current list leaves berlin out
    served = Served(site.config)
    try:
        old = served.get(POSTER)
        assert old.status == 200 and "relay2.example.org" not in old.text
        made = handed_out(site)
        served.clock.now += 7200  # well before the re-make point: the kept page still serves
        assert served.get(POSTER).body == old.body and handed_out(site) == made

        store = ListStore(site.config.in_data(site.config.publisher.dir))
        up = [probe(relay, True, NOW) for relay in site.relays]
        policy = list_policy(site.config)
        published = publish(store, site.relays, up, policy, NOW + 10, key=site.key, log=site.log)
        assert published.build.changed
        listed = {p["server"] for p in signing.parse_list(published.path.read_bytes()).proxies}
        assert "relay2.example.org" in listed

        new = served.get(POSTER)
        assert new.status == 200 and new.body != old.body
        assert handed_out(site) > made  # the ring was asked again
        # Within [distribution] interval the ring gives the batch its set again, so the new
        # page is told by its links: signed now, two hours after the old page's (a link's
        # expiry is rounded up to the hour).
        assert {signing.parse_link(t).server for t in links(new.text)} <= listed
        late = NOW + EXPIRY + 3600
        assert valid_at(served, new.text, late) and not valid_at(served, old.text, late)
        assert served.get(POSTER).body == new.body  # and it is kept in turn
    finally:
        served.close()


def test_the_page_is_made_again_at_half_the_link_expiry(site: DataSite, served: Served) -> None:
    first = served.get(POSTER)
    made = handed_out(site)
    served.clock.now = NOW + HALF - 1
    assert served.get(POSTER).body == first.body and handed_out(site) == made
    served.clock.now = NOW + HALF
    again = served.get(POSTER)
    assert again.status == 200 and again.body != first.body
    assert handed_out(site) == 2 * made
    late = NOW + EXPIRY + HALF - 1
    assert valid_at(served, again.text, late) and not valid_at(served, first.text, late)
    assert served.get(POSTER).body == again.body and handed_out(site) == 2 * made


def test_a_clock_set_back_makes_the_page_again(site: DataSite, served: Served) -> None:
    served.get(POSTER)
    made = handed_out(site)
    served.clock.now = NOW - 60
    assert served.get(POSTER).status == 200 and handed_out(site) == 2 * made


def test_concurrent_first_requests_make_one_page(site: DataSite, served: Served) -> None:
    clients = 16
    start = threading.Barrier(clients)
    replies: list[Reply] = []

    def fetch() -> None:
        start.wait()
        replies.append(served.get(POSTER))

    threads = [threading.Thread(target=fetch) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.status for r in replies] == [200] * clients
    assert len({r.body for r in replies}) == 1
    assert handed_out(site) == len(links(replies[0].text)) == 3  # one page's hand-out


def test_a_refusal_is_not_kept(site: DataSite) -> None:
    key_path = site.config.in_data(site.config.signing.key)
    key_file = key_path.read_bytes()
    key_path.unlink()
    served = Served(site.config)
    try:
        assert served.get(POSTER).status == 503
        key_path.write_bytes(key_file)
        key_path.chmod(0o600)
        reply = served.get(POSTER)
        assert reply.status == 200 and len(links(reply.text)) == 3
    finally:
        served.close()


def test_the_operator_always_gets_a_new_page(site: DataSite, served: Served) -> None:
    public = served.get(POSTER)
    made = handed_out(site)
    for times in (2, 3):
        reply = served.operator(POSTER)
        assert reply.status == 200 and handed_out(site) == times * made
        assert reply.headers["Cache-Control"] == "no-cache"
    assert served.get(POSTER).body == public.body and handed_out(site) == 3 * made


def test_only_public_batches_are_kept() -> None:
    cache: PosterCache[str] = PosterCache(["lobby"], HALF)

    async def no_list() -> str | None:
        return None

    async def make(now: float) -> str:
        return f"made at {now}"

    async def ask(batch: str) -> str:
        return await cache.page(batch, NOW, no_list, make)

    assert asyncio.run(ask("lobby")) == f"made at {NOW}"
    with pytest.raises(KeyError, match="not public"):
        asyncio.run(ask("kitchen"))
