"""Charts as inline SVG, drawn on the server from the status history (pure functions).

Theory of operation
-------------------
The status page needs no JavaScript and loads nothing: every chart is an ``<svg>`` element
written into the page. Each function takes plain numbers and returns SVG text:

- :func:`time_chart`: lines over time (probe health, relays listed, delivery rate);
- :func:`health_grid`: one row per relay, one cell per probe round, green when it passed and
  red with a cross when it failed (the cross keeps it readable without colour);
- :func:`bar_chart`: horizontal bars (queue states, sends per backend).

Every chart is ``role="img"`` with a ``<title>`` and a ``<desc>`` (``aria-labelledby``) that
says in words what it shows and the latest values; the page puts the same figures in a table
next to it, so a screen reader loses nothing. Colours are set as SVG attributes, not CSS, so
the charts need no inline style and the page's Content-Security-Policy stays strict. All text
is escaped; names come from the operator's config but are treated as untrusted all the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from kopir.web.status import ProbeRound, RelaySample

WIDTH = 640
HEIGHT = 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 16, 12, 28
OK, FAILED, MISSING, INK, GRID = "#1a7f37", "#cf222e", "#d0d7de", "#1f2328", "#8c959f"
PALETTE = ("#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#1b7c83")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    """(unix time, value), in time order."""


def clock(at: float) -> str:
    """A time as the charts label it: ``HH:MM`` UTC, with the date when not today."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _open(ident: str, title: str, desc: str, width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(ident)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-labelledby="{escape(ident)}-t {escape(ident)}-d">'
        f'<title id="{escape(ident)}-t">{escape(title)}</title>'
        f'<desc id="{escape(ident)}-d">{escape(desc)}</desc>'
    )


def _empty(ident: str, title: str, width: int = WIDTH, height: int = 60) -> str:
    return (
        _open(ident, title, "No data yet.", width, height)
        + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="{INK}" '
        'font-size="14">no data yet</text></svg>'
    )


def _text(
    x: float, y: float, label: str, anchor: str = "start", size: int = 11, fill: str = INK
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}" '
        f'font-size="{size}">{escape(label)}</text>'
    )


def time_chart(ident: str, title: str, series: Sequence[Series], unit: str) -> str:
    """Lines of ``series`` over time, on a shared axis from 0 to the largest value."""
    points = [p for s in series for p in s.points]
    if not points:
        return _empty(ident, title)
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(1.0, max(v for _, v in points))
    span = max(t1 - t0, 1.0)
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(t: float, v: float) -> str:
        x = PAD_LEFT + (t - t0) / span * plot_w if t1 > t0 else PAD_LEFT + plot_w / 2
        return f"{x:.1f},{PAD_TOP + plot_h - v / top * plot_h:.1f}"

    latest = "; ".join(f"{s.name}: {number(s.points[-1][1])} {unit}" for s in series if s.points)
    desc = f"{len(points)} samples from {clock(t0)} to {clock(t1)}. Latest: {latest}."
    parts = [_open(ident, title, desc, WIDTH, HEIGHT), _axes(top, unit, t0, t1, plot_w, plot_h)]
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(xy(t, v) for t, v in s.points)
        parts.append(
            f'<polyline class="line" points="{coords}" fill="none" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        x, y = xy(*s.points[-1]).split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        parts.append(_text(PAD_LEFT + 4 + 150 * i, PAD_TOP + 10, f"● {s.name}", fill=colour))
    return "".join(parts) + "</svg>"


def _axes(top: float, unit: str, t0: float, t1: float, plot_w: float, plot_h: float) -> str:
    base = PAD_TOP + plot_h
    return "".join(
        [
            f'<line x1="{PAD_LEFT}" y1="{base}" x2="{PAD_LEFT + plot_w}" y2="{base}" '
            f'stroke="{GRID}"/>',
            f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{base}" stroke="{GRID}"/>',
            _text(PAD_LEFT - 4, base + 4, "0", "end"),
            _text(PAD_LEFT - 4, PAD_TOP + 8, number(top), "end"),
            _text(4, PAD_TOP + plot_h / 2, unit, size=10),
            _text(PAD_LEFT, HEIGHT - 8, clock(t0)),
            _text(PAD_LEFT + plot_w, HEIGHT - 8, clock(t1), "end"),
        ]
    )


def health_grid(ident: str, title: str, names: Sequence[str], rounds: Sequence[ProbeRound]) -> str:
    """A row per relay and a cell per round: passed, failed (with a cross) or not probed."""
    if not names or not rounds:
        return _empty(ident, title)
    label_w, row_h = 140, 18
    cell = max(2.0, min(16.0, (WIDTH - label_w - PAD_RIGHT) / len(rounds)))
    height = PAD_TOP + row_h * len(names) + PAD_BOTTOM
    last = {r.name: r for r in rounds[-1].relays}
    states = ", ".join(f"{n} {'ok' if n in last and last[n].ok else 'failing'}" for n in names)
    desc = f"{len(rounds)} probe rounds from {clock(rounds[0].at)} to {clock(rounds[-1].at)}."
    parts = [_open(ident, title, f"{desc} Last round: {states}.", WIDTH, height)]
    for row, name in enumerate(names):
        y = PAD_TOP + row * row_h
        parts.append(_text(4, y + 13, name[:22]))
        for col, probe in enumerate(rounds):
            found = next((r for r in probe.relays if r.name == name), None)
            parts.append(_cell(label_w + col * cell, y + 2, cell - 1, row_h - 4, found))
    parts.append(_text(label_w, height - 8, clock(rounds[0].at)))
    parts.append(_text(WIDTH - PAD_RIGHT, height - 8, clock(rounds[-1].at), "end"))
    return "".join(parts) + "</svg>"


def _cell(x: float, y: float, w: float, h: float, sample: RelaySample | None) -> str:
    ok = sample is not None and sample.ok
    colour = MISSING if sample is None else OK if ok else FAILED
    rect = (
        f'<rect class="cell" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{colour}"/>'
    )
    if sample is None or ok:
        return rect
    cross = f"M{x:.1f},{y:.1f}l{w:.1f},{h:.1f}M{x + w:.1f},{y:.1f}l{-w:.1f},{h:.1f}"
    return rect + f'<path d="{cross}" stroke="#fff" stroke-width="1"/>'


def bar_chart(ident: str, title: str, bars: Sequence[tuple[str, float]], unit: str) -> str:
    """One horizontal bar per (label, value), scaled to the largest."""
    if not bars:
        return _empty(ident, title)
    label_w, row_h, value_w = 140, 22, 70
    height = PAD_TOP + row_h * len(bars) + 8
    top = max(1.0, max(v for _, v in bars))
    desc = "; ".join(f"{label}: {number(v)} {unit}" for label, v in bars)
    parts = [_open(ident, title, desc + ".", WIDTH, height)]
    for row, (label, value) in enumerate(bars):
        y = PAD_TOP + row * row_h
        w = (WIDTH - label_w - value_w) * value / top
        colour = PALETTE[row % len(PALETTE)]
        parts.append(_text(4, y + 14, label[:22]))
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{colour}"/>'
        )
        parts.append(_text(label_w + w + 6, y + 14, number(value)))
    return "".join(parts) + "</svg>"
