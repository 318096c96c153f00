"""A public poster batch over real HTTP: strangers get the default poster and nothing else.

``count`` is the k of the batch's share of the distribution ring, and the ``new`` pool is a
second, disjoint set of relays, so a stranger who could choose them would read the whole
fleet (and write to the distribution record with every try). Only the operator chooses them.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator

import pytest

import signing
from tests.kopir.webhelpers import DataSite, Served, check_headers, make_data

ESTABLISHED = 9
NEW = 3
DEFAULT = 6
REFUSED = "only the operator may choose count and pool"


def _fleet() -> str:
    """More relays than a public poster shows, in both pools (appended to the config's
    ``[[publisher.relays]]``; the three of ``webhelpers`` are established)."""
    rows = []
    for i in range(ESTABLISHED - 3 + NEW):
        tags = 'tags = ["new"]\n' if i >= ESTABLISHED - 3 else ""
        rows.append(
            f'[[publisher.relays]]\nname = "extra{i}"\nserver = "10.1.0.{i + 1}"\nport = 443\n'
            f'key = "{i + 16:032x}"\nmode = "classic"\n{tags}'
        )
    return "\n".join(rows)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> DataSite:
    web = f'poster_batches = ["lobby"]\n\n{_fleet()}'
    return make_data(tmp_path_factory.mktemp("poster"), web)


@pytest.fixture(scope="module")
def served(site: DataSite) -> Iterator[Served]:
    server = Served(site.config)
    yield server
    server.close()


def servers(page: str) -> set[str]:
    links = [html.unescape(m) for m in re.findall(r'href="(tg://proxy\?[^"]+)"', page)]
    return {signing.parse_link(text).server for text in links}


def record(site: DataSite) -> str:
    """A digest of the distribution record and its write-ahead log (absent: empty)."""
    path = site.config.in_data(site.config.distribution.record)
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + "-wal")):
        digest.update(part.read_bytes() if part.exists() else b"")
    return digest.hexdigest()


def test_a_stranger_gets_the_default_poster(site: DataSite, served: Served) -> None:
    listed = {p["server"] for p in signing.parse_list(site.versions[-1]).proxies}
    assert len(listed) == ESTABLISHED + NEW  # more than a poster shows
    reply = served.get("/poster?batch=lobby")
    assert reply.status == 200, reply.text[:300]
    check_headers(reply)
    assert len(servers(reply.text)) == DEFAULT
    explicit = served.get(f"/poster?batch=lobby&count={DEFAULT}&pool=established")
    assert explicit.status == 200 and servers(explicit.text) == servers(reply.text)


@pytest.mark.parametrize(
    "query",
    ["count=60", "count=7", "count=1", "pool=new", "count=6&pool=new", "count=60&pool=new"],
)
def test_a_stranger_cannot_choose_count_or_pool(site: DataSite, served: Served, query: str) -> None:
    served.get("/poster?batch=lobby")  # the record exists before we watch it
    before = record(site)
    reply = served.get(f"/poster?batch=lobby&{query}")
    assert reply.status == 403 and REFUSED in reply.text, (reply.status, reply.text[:300])
    assert "<html" in reply.text  # a page, for a browser
    check_headers(reply)
    assert "tg://proxy" not in reply.text
    assert record(site) == before  # a refused request writes nothing


def test_a_stranger_trying_every_count_and_pool_sees_only_the_default_relays(
    served: Served,
) -> None:
    default = servers(served.get("/poster?batch=lobby").text)
    seen: set[str] = set()
    for pool in ("new", "established", "new"):
        for count in (60, 12, 7, 1):
            seen |= servers(served.get(f"/poster?batch=lobby&count={count}&pool={pool}").text)
    assert seen <= default


def test_a_wrong_token_does_not_make_a_stranger_the_operator(served: Served) -> None:
    served.clock.now += 3600  # a fresh failed-login window
    reply = served.get("/poster?batch=lobby&count=60", {"Authorization": "Bearer wrong-token"})
    assert reply.status == 403 and REFUSED in reply.text


def test_the_operator_still_chooses_count_and_pool(served: Served) -> None:
    # Fresh batches: within [distribution] interval a batch keeps the set it was given.
    whole = served.operator("/poster?batch=kitchen&count=60")
    assert whole.status == 200 and len(servers(whole.text)) == ESTABLISHED
    fresh = served.operator("/poster?batch=hall&pool=new")
    assert fresh.status == 200 and len(servers(fresh.text)) == NEW
    assert not servers(fresh.text) & servers(whole.text)
    two = served.operator("/poster?batch=porch&count=2")
    assert two.status == 200 and len(servers(two.text)) == 2
    public = served.operator("/poster?batch=lobby&pool=new&count=2")
    assert public.status == 200 and servers(public.text) <= servers(fresh.text)


def test_bad_values_are_still_400_for_anyone(served: Served) -> None:
    for query in ("count=0", "count=61", "count=x", "pool=old"):
        assert served.get(f"/poster?batch=lobby&{query}").status == 400
        assert served.operator(f"/poster?batch=lobby&{query}").status == 400
