"""The operator's status page and the Prometheus exposition, from the history (pure).

Theory of operation
-------------------
:func:`render` turns a :class:`~kopir.web.status.StatusHistory` and a few facts read from the
data directory (:class:`Published`: the current list version and the log's size) into one HTML
page. Each section pairs an inline-SVG chart (``kopir.web.charts``) with a table of the same
figures, so the page reads the same with or without sight:

- relay health: a grid of probe rounds per relay, healthy relays over time, and the last
  round's result per relay;
- list versions: relays listed per version over time, and the versions seen;
- the SMS queue: messages per state now, and messages waiting over time;
- the delivery rate: messages delivered per minute;
- sends per backend: accepted, retried and failed since the process started.

:func:`metrics` gives the same figures in the Prometheus text format (version 0.0.4), followed
by the relay's own metrics when the runner hands them over. Labels hold relay and backend
names from the config and queue state names; never a phone number or a client address.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from kopir.web import charts, pages
from kopir.web.status import StatusHistory

PENDING = ("queued", "sending")


@dataclass(frozen=True)
class Published:
    """What the data directory says now."""

    list_version: int | None = None
    list_expires: str = ""
    list_relays: int = 0
    list_signers: tuple[str, ...] = ()
    log_size: int | None = None


def render(history: StatusHistory, published: Published, now: float) -> str:
    sections = [
        _summary(history, published, now),
        _relays(history),
        _lists(history),
        _queue(history),
        _delivery(history),
        _backends(history),
    ]
    logout = '<form method="post" action="/logout"><button type="submit">Log out</button></form>'
    return pages.document("kopir status", "".join(sections) + logout)


def _section(ident: str, title: str, *parts: str) -> str:
    return (
        f'<section aria-labelledby="{ident}-h"><h2 id="{ident}-h">{escape(title)}</h2>'
        + "".join(parts)
        + "</section>"
    )


def _summary(history: StatusHistory, published: Published, now: float) -> str:
    probes = history.probes
    last = probes[-1] if probes else None
    rows: list[tuple[str, object]] = [
        ("page drawn", charts.clock(now)),
        ("last probe round", charts.clock(last.at) if last else "none yet"),
        ("relays healthy", f"{last.healthy} of {len(last.relays)}" if last else "-"),
        ("list version", published.list_version if published.list_version else "none yet"),
        ("list expires", published.list_expires or "-"),
        ("list signed by", ", ".join(published.list_signers) or "nobody yet"),
        ("log entries", published.log_size if published.log_size is not None else "no log"),
    ]
    return _section("summary", "Now", pages.table("Current state", ("what", "value"), rows))


def _relays(history: StatusHistory) -> str:
    names, probes = history.relay_names(), history.probes
    grid = charts.health_grid("chart-relays", "Relay health per probe round", names, probes)
    healthy = charts.Series("healthy", [(p.at, p.healthy) for p in probes])
    probed = charts.Series("probed", [(p.at, len(p.relays)) for p in probes])
    line = charts.time_chart(
        "chart-healthy", "Healthy relays over time", [healthy, probed], "relays"
    )
    last = {r.name: r for r in probes[-1].relays} if probes else {}
    rows = []
    for name in names:
        sample = last.get(name)
        seen = [r.ok for p in probes for r in p.relays if r.name == name]
        state = "not probed" if sample is None else "ok" if sample.ok else sample.failure
        rtt = "-" if sample is None or sample.rtt_ms is None else f"{sample.rtt_ms:.0f} ms"
        rows.append((name, state, rtt, f"{sum(seen)} of {len(seen)}"))
    head = ("relay", "last round", "connect RTT", "rounds passed")
    table = pages.table("Relays in the last probe round", head, rows)
    return _section("relays", "Relay health", grid, line, table)


def _lists(history: StatusHistory) -> str:
    lists = history.lists
    listed = charts.Series("listed", [(s.at, s.healthy) for s in lists])
    total = charts.Series("configured", [(s.at, s.total) for s in lists])
    chart = charts.time_chart(
        "chart-lists", "Relays in the list over time", [listed, total], "relays"
    )
    rows = [(s.version, charts.clock(s.at), s.healthy, s.total) for s in reversed(lists)]
    head = ("version", "seen at", "relays listed", "relays configured")
    return _section("lists", "List versions", chart, pages.table("List versions seen", head, rows))


def _queue(history: StatusHistory) -> str:
    queues = history.queues
    latest = queues[-1].counts if queues else ()
    bars = charts.bar_chart("chart-queue", "SMS queue: messages per state", latest, "messages")
    waiting = charts.Series("waiting", [(q.at, sum(q.count(s) for s in PENDING)) for q in queues])
    line = charts.time_chart("chart-waiting", "SMS waiting to be sent", [waiting], "messages")
    table = pages.table("Messages per state now", ("state", "messages"), latest)
    return _section("queue", "SMS queue", bars, table, line)


def _delivery(history: StatusHistory) -> str:
    rate = history.delivery_rate()
    chart = charts.time_chart(
        "chart-delivery", "SMS delivered per minute", [charts.Series("delivered", rate)], "per min"
    )
    rows = [(charts.clock(t), round(v, 1)) for t, v in reversed(rate[-10:])]
    table = pages.table("Delivered per minute, latest first", ("until", "per minute"), rows)
    return _section("delivery", "Delivery rate", chart, table)


def _backends(history: StatusHistory) -> str:
    totals = history.backend_totals()
    bars = charts.bar_chart(
        "chart-failures",
        "Failed SMS per backend",
        [(t.backend, t.failed) for t in totals],
        "failed",
    )
    rows = [(t.backend, t.accepted, t.retried, t.failed) for t in totals]
    head = ("backend", "accepted", "retried", "failed")
    table = pages.table("Sends per backend since start", head, rows)
    return _section("backends", "Failures per backend", bars, table)


# -- Prometheus -----------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return lines


def metrics(history: StatusHistory, published: Published, relay_text: str = "") -> str:
    probes = history.probes
    last = probes[-1].relays if probes else ()
    lines = _family(
        "kopir_relay_up", "gauge", "1 when the relay passed the last probe round, else 0",
        ((f'{{relay="{_label(r.name)}"}}', float(r.ok)) for r in last),
    )  # fmt: skip
    lines += _family(
        "kopir_relay_rtt_ms", "gauge", "Connect round trip of the last probe, in ms",
        ((f'{{relay="{_label(r.name)}"}}', r.rtt_ms) for r in last if r.rtt_ms is not None),
    )  # fmt: skip
    listed = published.list_version is not None
    single = (
        ("kopir_probe_timestamp_seconds", "When the last probe round finished",
         probes[-1].at if probes else None),
        ("kopir_list_version", "The current list version", published.list_version),
        ("kopir_list_relays", "Relays in the current list",
         published.list_relays if listed else None),
        ("kopir_log_entries", "Entries in the transparency log", published.log_size),
    )  # fmt: skip
    for name, text, value in single:
        if value is not None:
            lines += _family(name, "gauge", text, [("", value)])
    queue = history.queues[-1].counts if history.queues else ()
    lines += _family(
        "kopir_sms_queue_messages", "gauge", "SMS in the queue, by state",
        ((f'{{state="{_label(s)}"}}', n) for s, n in queue),
    )  # fmt: skip
    text = "SMS handed to a backend, by outcome"
    lines += _family("kopir_sms_sent_total", "counter", text, _sent(history))
    return "\n".join(lines) + "\n" + relay_text


def _sent(history: StatusHistory) -> list[tuple[str, float]]:
    out = []
    for t in history.backend_totals():
        for outcome, n in (("accepted", t.accepted), ("retried", t.retried), ("failed", t.failed)):
            out.append((f'{{backend="{_label(t.backend)}",outcome="{outcome}"}}', float(n)))
    return out
