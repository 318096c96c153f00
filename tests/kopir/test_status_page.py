"""The operator's status page: the history it draws from, its inline-SVG charts and their
text alternatives, the Prometheus text, and headless Chromium (tests/chromium.py) logging in
through the form, seeing the charts, and being refused without the token. Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from kopir.web import StatusError, StatusHistory
from kopir.web.charts import Series, bar_chart, health_grid, time_chart
from kopir.web.statuspage import Published, metrics, render
from proxylist import Relay
from tests.chromium import ARTIFACTS, Browser
from tests.kopir.webhelpers import NOW, TOKEN, DataSite, Served, make_data, probe

SVG = "{http://www.w3.org/2000/svg}"
RELAYS = (
    Relay("almaty", "relay1.example.org", 443, bytes(16), "ee", "example.com"),
    Relay("berlin", "relay2.example.org", 8443, bytes(range(16)), "dd"),
    Relay("oslo <b>", "10.0.0.3", 443, b"\x07" * 16, "classic"),
)


def filled_history(rounds: int = 12) -> StatusHistory:
    """A day of a publisher: probe rounds with berlin flapping, versions, queue and sends."""
    history = StatusHistory(limit=50)
    delivered = 0
    for i in range(rounds):
        at = NOW + i * 900
        results = [probe(r, ok=not (r.name == "berlin" and i % 3 == 2), at=at) for r in RELAYS]
        history.record_probe(results, at)
        if i % 4 == 0:
            history.record_list(i // 4 + 1, sum(x.ok for x in results), len(RELAYS), at)
        delivered += 30 * i
        counts = {"queued": 100 - 8 * i, "sending": 5, "accepted": 10, "delivered": delivered}
        history.record_queue({**counts, "failed": i, "expired": 0}, at)
        history.record_sends("smpp", 40, 2, 1 if i % 2 else 0, at)
    history.record_sends("outbox", 5, 0, 0, NOW)
    return history


# -- the history ----------------------------------------------------------------------------


def test_history_is_bounded_and_keeps_the_newest() -> None:
    history = StatusHistory(limit=5)
    for i in range(20):
        history.record_probe([probe(RELAYS[0], True, NOW + i)], NOW + i)
        history.record_queue({"queued": i}, NOW + i)
        history.record_list(i + 1, 1, 1, NOW + i)
    assert [p.at for p in history.probes] == [NOW + i for i in range(15, 20)]
    assert len(history.queues) == len(history.lists) == 5
    assert history.lists[-1].version == 20
    with pytest.raises(StatusError, match="1-100000 samples"):
        StatusHistory(limit=0)


def test_delivery_rate_is_per_minute_and_never_negative() -> None:
    history = StatusHistory()
    history.record_queue({"delivered": 0}, NOW)
    history.record_queue({"delivered": 30}, NOW + 60)
    history.record_queue({"delivered": 90}, NOW + 180)
    history.record_queue({"delivered": 10}, NOW + 240)  # a new queue file: the count shrank
    history.record_queue({"delivered": 10}, NOW + 240)  # same instant: no rate at all
    assert history.delivery_rate() == [(NOW + 60, 30.0), (NOW + 180, 30.0), (NOW + 240, 0.0)]


def test_backend_totals_count_since_start_beyond_the_samples_kept() -> None:
    history = StatusHistory(limit=2)
    for _ in range(10):
        history.record_sends("smpp", 3, 1, 1, NOW)
    history.record_sends("twilio", 0, 0, 0, NOW)  # nothing happened: not a sample
    (smpp,) = history.backend_totals()
    assert (smpp.backend, smpp.accepted, smpp.retried, smpp.failed) == ("smpp", 30, 10, 10)
    assert len(history.sends) == 2


def test_a_failed_probe_names_its_stage() -> None:
    history = StatusHistory()
    history.record_probe([probe(RELAYS[0], False, NOW), probe(RELAYS[1], True, NOW)], NOW)
    almaty, berlin = history.probes[0].relays
    assert (almaty.ok, almaty.failure, almaty.rtt_ms) == (False, "connect", None)
    assert (berlin.ok, berlin.failure, berlin.rtt_ms) == (True, "", 12.0)


# -- charts and the page --------------------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    ids = root.get("aria-labelledby", "").split()
    assert [root.find(f"{SVG}title").get("id"), root.find(f"{SVG}desc").get("id")] == ids  # type: ignore[union-attr]
    return root


def test_charts_are_well_formed_accessible_svg_with_escaped_names() -> None:
    history = filled_history()
    grid = parse_svg(health_grid("g", "Relays", history.relay_names(), history.probes))
    cells = grid.findall(f".//{SVG}rect")
    assert len(cells) == 3 * 12
    assert {c.get("fill") for c in cells} == {"#1a7f37", "#cf222e"}
    assert "berlin failing" in grid.find(f"{SVG}desc").text  # type: ignore[operator,union-attr]
    assert "oslo <b>" in [t.text for t in grid.iter(f"{SVG}text")]
    line = parse_svg(time_chart("t", "Healthy", [Series("a", [(NOW, 1), (NOW + 60, 3)])], "n"))
    assert len(line.findall(f".//{SVG}polyline")) == 1
    bars = parse_svg(bar_chart("b", "Queue", [("queued", 4), ("failed", 0)], "messages"))
    assert len(bars.findall(f".//{SVG}rect")) == 2
    empty = parse_svg(time_chart("e", "Nothing", [Series("a", [])], "n"))
    assert "no data yet" in ET.tostring(empty, encoding="unicode")


def test_status_page_pairs_every_chart_with_a_table() -> None:
    page = render(filled_history(), Published(3, "2026-01-04T00:00:00Z", 2, ("ABC",), 3), NOW)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 7
    assert page.count("<table>") == 6
    assert "oslo &lt;b&gt;" in page and "oslo <b>" not in page
    for words in ("Relay health", "List versions", "SMS queue", "Delivery rate", "per backend"):
        assert words in page
    assert "<script" not in page and "style=" not in page and "+7" not in page


def test_empty_history_renders_without_charts_data() -> None:
    page = render(StatusHistory(), Published(), NOW)
    assert page.count("no data yet") >= 7 and "none yet" in page


def test_metrics_text_names_relays_queue_states_and_backends() -> None:
    text = metrics(filled_history(), Published(3, "", 2, (), 7), "relay_connections_total 4\n")
    lines = text.splitlines()
    assert 'kopir_relay_up{relay="berlin"} 0' in lines
    assert 'kopir_relay_up{relay="oslo <b>"} 1' in lines
    assert 'kopir_sms_queue_messages{state="queued"} 12' in lines
    assert 'kopir_sms_sent_total{backend="smpp",outcome="failed"} 6' in lines
    assert "kopir_list_version 3" in lines and "kopir_log_entries 7" in lines
    assert lines[-1] == "relay_connections_total 4"
    families = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(families) == len(set(families))


# -- headless Chromium ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> DataSite:
    return make_data(tmp_path_factory.mktemp("status"))


@pytest.fixture(scope="module")
def served(site: DataSite) -> Iterator[Served]:
    server = Served(site.config, filled_history())
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as chromium:
        yield chromium


CHARTS = "document.querySelectorAll('svg.chart').length"


def test_chromium_is_refused_without_the_token_and_sees_charts_after_login(
    served: Served, browser: Browser
) -> None:
    url = f"http://localhost:{served.port}"  # the browser reaches loopback by this name
    page = browser.new_page(width=1000, height=900)
    page.goto(f"{url}/status")
    assert page.evaluate(CHARTS) == 0
    assert page.evaluate("document.querySelector('input#token[type=password]') !== null")
    page.screenshot(ARTIFACTS / "status-refused.png")

    _submit_login(page, browser, "not-the-token-0123456789")
    assert page.evaluate("location.pathname") == "/login"
    assert "Wrong token" in page.evaluate("document.body.innerText")
    assert page.evaluate(CHARTS) == 0

    _submit_login(page, browser, TOKEN)
    assert page.evaluate("location.pathname") == "/status"
    assert page.evaluate(CHARTS) == 7
    assert page.evaluate("document.querySelectorAll('svg.chart polyline').length") >= 4
    assert page.evaluate("document.querySelectorAll('svg.chart rect.cell').length") == 36
    labelled = "[...document.querySelectorAll('svg.chart')].every(s => s.getAttribute('role') == 'img' && s.querySelector('title').textContent)"  # noqa: E501
    assert page.evaluate(labelled)
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the session
    width = "document.querySelector('svg.chart').getBoundingClientRect().width"
    assert page.evaluate(width) > 100  # the stylesheet loaded and the charts have a size
    refusals = "the server responded with a status of 401"  # the two refused loads above
    assert [p for p in page.problems() if refusals not in p] == []  # no CSP violation
    page.screenshot(ARTIFACTS / "status-page.png")


def _submit_login(page: object, browser: Browser, token: str) -> None:
    start = len(browser.events)
    script = (
        f"document.querySelector('#token').value = {token!r};"
        " document.querySelector('form.login').submit(); true"
    )
    page.evaluate(script)  # type: ignore[attr-defined]
    browser.wait_event("Page.loadEventFired", page.session, start)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "name"), [("/", "home"), ("/poster?batch=lobby", "poster")])
def test_public_pages_load_in_chromium_under_their_csp(
    served: Served, browser: Browser, path: str, name: str
) -> None:
    page = browser.new_page()
    page.goto(f"http://localhost:{served.port}{path}")
    assert page.problems() == []  # a CSP violation would be logged here
    assert all(u.startswith(f"http://localhost:{served.port}/") for u in page.requests())
    page.screenshot(ARTIFACTS / f"web-{name}.png")
