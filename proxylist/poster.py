"""Printable posters: an A4 HTML page of signed proxy links with their QR codes (DESIGN.md §6
"QR"), and its PDF through headless Chromium.

Theory of operation
-------------------
A poster is for people who cannot tap an SMS link: a page put up or passed hand to hand, each
entry a QR code a phone camera opens in Telegram. Every entry carries what a careful reader
needs to trust it without a network: the link text, the signing key's fingerprint (the minisign
key id in hex, as ``kopir keys generate`` and ``minisign`` print it, to compare with one from a
trusted source), the expiry in UTC, and short instructions in Kazakh, Russian and English.

Entries come from links verified against the trust root (:func:`verified_entries`), so a
poster never prints a link its own verifier would refuse, or from links signed now
(:func:`signed_entries`). :func:`render_html` is pure: entries in, one self-contained HTML
document out. It fetches nothing (no web fonts, no images by URL, no scripts): the QR codes are
inline SVG, the fonts are the printer's own. It is accessible: every text is real text with a
``lang`` attribute, the page has headings per entry, each code has a text alternative, and all
text is black on white. ``@page { size: A4 }`` and ``break-inside: avoid`` make it print as
cards that are never cut in half.

:func:`render_pdf` is the one I/O adapter: it runs ``chromium --headless --print-to-pdf`` with
networking pointed at a dead local port, so printing a poster reveals nothing to anyone.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import signing
from proxylist import qr
from proxylist.errors import QrError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# A poster needs no network: everything Chromium might fetch goes to a dead port on loopback.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--proxy-server=http://127.0.0.1:9",
    "--enable-logging=stderr",
    "--v=0",
)
# What Chromium logs when the page itself has a problem (not its own dbus or GPU noise).
PAGE_ERROR_MARKERS = (":CONSOLE", "net::ERR_", "Failed to load", "Uncaught")

TITLE = {"kk": "Telegram прокси", "ru": "Прокси для Telegram", "en": "Telegram proxy"}
SCAN = {
    "kk": "Телефонның камерасын QR-кодқа бағыттаңыз: Telegram проксиді өзі қосады.",
    "ru": "Наведите камеру телефона на QR-код: Telegram сам подключит прокси.",
    "en": "Point your phone camera at the QR code: Telegram adds the proxy itself.",
}
CHECK = {
    "kk": "Кілт нөмірін сенімді көзден алған нөмірмен салыстырыңыз. "
    "Мерзімі өткен соң сілтеме жұмыс істемеуі мүмкін.",
    "ru": "Сверьте номер ключа с номером из надёжного источника. "
    "После окончания срока ссылка может не работать.",
    "en": "Compare the key number with one from a source you trust. "
    "After the expiry the link may stop working.",
}
KEY_LABEL = {"kk": "Кілт", "ru": "Ключ", "en": "Key"}
EXPIRY_LABEL = {"kk": "Мерзімі", "ru": "Действует до", "en": "Valid until"}
LANGS = ("kk", "ru", "en")


@dataclass(frozen=True)
class PosterEntry:
    """One link on a poster."""

    link: str
    """The exact text in the QR code and printed under it."""
    server: str
    port: int
    key_id: str
    """The signing key's minisign key id in hex, as ``kopir`` and ``minisign`` print it."""
    expires_at: float
    """Unix time the signature expires."""

    @property
    def expiry_text(self) -> str:
        """The expiry in readable UTC, e.g. ``2026-11-25 13:00 UTC``."""
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.expires_at))


def _entry(link: signing.Link, key_id: str, scheme: str) -> PosterEntry:
    return PosterEntry(link.url(scheme), link.server, link.port, key_id, link.expires_at)


def verified_entries(
    texts: Iterable[str], trust: signing.TrustRoot, now: float, scheme: str = "tg"
) -> list[PosterEntry]:
    """Entries for signed links that verify against ``trust`` now; the first bad one is an error.

    ``scheme`` (``tg`` or ``tme``) is the form printed and encoded; the signature does not
    cover the scheme, so either form verifies.
    """
    entries = []
    for number, text in enumerate(texts, 1):
        try:
            link = signing.verify_link(text.strip(), trust, now)
        except signing.VerificationError as exc:
            raise QrError(f"link {number} does not verify ({exc}); fix or remove it") from None
        entries.append(_entry(link, trust.link_keys[link.kid or ""].public_key.hex_id, scheme))
    return entries


def signed_entries(
    texts: Iterable[str], key: signing.SecretKey, expires_at: float, scheme: str = "tg"
) -> list[PosterEntry]:
    """Entries for proxy links signed now with ``key``, valid until ``expires_at``."""
    entries = []
    for number, text in enumerate(texts, 1):
        try:
            link = signing.sign_link(text.strip(), key, expires_at)
        except signing.VerificationError as exc:
            raise QrError(f"link {number} cannot be signed ({exc})") from None
        entries.append(_entry(link, key.hex_id, scheme))
    return entries


# -- the page -------------------------------------------------------------------------------------

STYLE = """
@page { size: A4; margin: 12mm; }
* { box-sizing: border-box; }
html { background: #fff; color: #000; }
body { margin: 0; font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 9pt;
  line-height: 1.3; }
header { border-bottom: 0.5mm solid #000; margin-bottom: 4mm; }
h1 { font-size: 16pt; margin: 0 0 1mm 0; }
header p { margin: 0 0 1mm 0; }
main { display: grid; grid-template-columns: 1fr 1fr; gap: 4mm; }
article { border: 0.3mm solid #000; padding: 3mm; break-inside: avoid; page-break-inside: avoid; }
h2 { font-size: 11pt; margin: 0 0 2mm 0; }
figure { margin: 0 auto 2mm auto; width: 52mm; }
figure svg { display: block; width: 52mm; height: 52mm; }
.link { font-family: "DejaVu Sans Mono", monospace; font-size: 6.5pt; word-break: break-all;
  margin: 0 0 2mm 0; }
.link a { color: #000; text-decoration: none; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0 2mm; margin: 0 0 2mm 0; }
dt { font-weight: bold; }
dd { margin: 0; font-family: "DejaVu Sans Mono", monospace; }
.steps p { margin: 0 0 1mm 0; }
footer { margin-top: 4mm; font-size: 8pt; }
@media screen { body { max-width: 210mm; margin: 0 auto; padding: 8mm; } }
"""


def _by_lang(texts: dict[str, str], tag: str = "p") -> str:
    return "".join(f'<{tag} lang="{lang}">{escape(texts[lang])}</{tag}>' for lang in LANGS)


def _labels(texts: dict[str, str]) -> str:
    return " / ".join(f'<span lang="{lang}">{escape(texts[lang])}</span>' for lang in LANGS)


def _article(number: int, entry: PosterEntry, level: qr.Level) -> str:
    code = qr.encode(entry.link, level)
    where = f"{entry.server}, port {entry.port}"
    image = qr.svg(code, label=f"QR code of Telegram proxy link {number} ({where})")
    return (
        f'<article aria-labelledby="entry-{number}">'
        f'<h2 id="entry-{number}"><span lang="en">Proxy</span> {number}: '
        f"{escape(entry.server)}:{entry.port}</h2>"
        f"<figure>{image}</figure>"
        f'<p class="link"><a href="{escape(entry.link)}">{escape(entry.link)}</a></p>'
        f"<dl><dt>{_labels(KEY_LABEL)}</dt><dd>{escape(entry.key_id)}</dd>"
        f"<dt>{_labels(EXPIRY_LABEL)}</dt><dd>{escape(entry.expiry_text)}</dd></dl>"
        f'<div class="steps">{_by_lang(SCAN)}</div>'
        "</article>"
    )


def render_html(entries: Sequence[PosterEntry], batch: str, level: qr.Level = "M") -> str:
    """The poster as one self-contained HTML document (A4, print-ready)."""
    if not entries:
        raise QrError("a poster needs at least one link")
    articles = "".join(_article(i, e, level) for i, e in enumerate(entries, 1))
    keys = ", ".join(sorted({e.key_id for e in entries}))
    title = " / ".join(TITLE[lang] for lang in LANGS)
    return (
        '<!DOCTYPE html>\n<html lang="kk"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{escape(title)}: {escape(batch)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_labels(TITLE)}</h1>{_by_lang(CHECK)}</header>"
        f"<main>{articles}</main>"
        f'<footer><p lang="en">Batch {escape(batch)}. Signed by key {escape(keys)}. '
        "Auditors: kopir verify link LINK --trust trust.json</p></footer>"
        "</body></html>\n"
    )


def png_data_uri(entry: PosterEntry, level: qr.Level = "M") -> str:
    """The entry's QR code as a ``data:`` URI PNG, for pages that cannot inline SVG."""
    return (
        "data:image/png;base64," + base64.b64encode(qr.png(qr.encode(entry.link, level))).decode()
    )


# -- Chromium: the I/O adapter --------------------------------------------------------------------


def find_chromium(name: str | None = None) -> str:
    """The Chromium executable (``name``, else the usual names on PATH), or a ``QrError``."""
    for candidate in (name,) if name else CHROMIUM_NAMES:
        found = shutil.which(candidate)
        if found:
            return found
    raise QrError(
        "Chromium is not installed, so no PDF: install it (Debian: apt-get install chromium) "
        "or print the HTML page from a browser"
    )


def run_chromium(
    page: Path, *args: str, chromium: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on a local file with a throwaway profile; never raises on exit."""
    exe = find_chromium(chromium)
    with tempfile.TemporaryDirectory(prefix="kopir-chromium-") as profile:
        command = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(
                [*command, Path(page).resolve().as_uri()],
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                check=False,
                env={**os.environ, "HOME": profile},
            )
        except subprocess.TimeoutExpired:
            raise QrError(f"Chromium did not finish within {timeout:.0f} s") from None


def page_errors(stderr: str) -> list[str]:
    """The lines of Chromium's log that report a problem with the page itself."""
    return [line for line in stderr.splitlines() if any(m in line for m in PAGE_ERROR_MARKERS)]


def render_pdf(page: Path, pdf: Path, chromium: str | None = None) -> None:
    """Print the HTML ``page`` to ``pdf`` (A4, no browser header or footer)."""
    pdf = Path(pdf).resolve()
    done = run_chromium(page, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", chromium=chromium)
    errors = page_errors(done.stderr)
    if done.returncode != 0 or errors:
        why = errors[0] if errors else f"exit code {done.returncode}"
        raise QrError(f"Chromium could not print {page} to PDF: {why.strip()[:200]}")
    try:
        head = pdf.read_bytes()[:5]
    except OSError:
        head = b""
    if head != b"%PDF-":
        raise QrError(f"Chromium did not write a PDF to {pdf}")
