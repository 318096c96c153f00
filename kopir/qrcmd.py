"""``kopir qr`` and ``kopir poster``: QR codes and printable posters of signed links.

``qr`` encodes one link exactly as given (so what a scanner reads can be compared character by
character with what was signed). The link must be a well-formed proxy link; an unsigned link
is encoded with a warning, a signed one is checked against ``--trust`` when given. ``poster``
takes signed links from a file (each must verify against the trust root) or signs links now, and
writes an A4 HTML page (and a PDF through Chromium). Signed now, the links are the batch's own:
once a list is built, the relays the distribution ring gives the recipient ``poster:<batch>``
(so each batch of posters exposes its own few relays, and ``kopir list exposed`` can tell which
batch leaked a burned one); before that, this machine's ``[relay]``. The work is done in
``proxylist.qr``, ``proxylist.poster`` and ``proxylist.distribute``.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any

import signing
from kopir.config import Config, load_config
from kopir.distcmd import healthy_relays, open_distributor
from kopir.listcmd import publisher_relays
from kopir.output import EXIT_USAGE, CommandFailed, emit, warn
from kopir.relaycmd import relay_settings, secret_links
from proxylist import ListStore, poster, qr
from proxylist.errors import QrError
from signing import Link
from signing.fileio import read_bytes, read_text, write_atomic
from signing.minisign import key_id_hex

MAX_POSTER_LINKS = 60


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise CommandFailed(f"cannot write {path}: {exc.strerror or exc}") from None


def _signer(link: signing.Link) -> str:
    kid = base64.urlsafe_b64decode((link.kid or "") + "=")
    return key_id_hex(kid)


def _check_link(text: str, trust_path: str | None) -> signing.Link:
    try:
        link = signing.parse_link(text)
    except signing.VerificationError as exc:
        raise CommandFailed(f"not a proxy link: {exc.detail}", code=EXIT_USAGE) from None
    if link.sig is None:
        warn("warning: this link is not signed; people cannot check who made it")
    elif trust_path:
        trust = signing.parse_trust_root(read_bytes(Path(trust_path), "trust root"))
        try:
            signing.verify_link(link, trust, time.time())
        except signing.VerificationError as exc:
            raise CommandFailed(f"the link does not verify: {exc}") from None
        key = trust.link_keys[link.kid or ""]
        warn(f"valid: signed by {key.name} ({key.public_key.hex_id}), expires {link.exp} UTC")
    else:
        warn(f"signed by key {_signer(link)}; not checked (give --trust FILE to check)")
    return link


def qr_command(args: argparse.Namespace) -> int:
    text = args.link.strip()
    _check_link(text, args.trust)
    try:
        code = qr.encode(text, args.level)
        if args.terminal:
            sys.stdout.write(qr.terminal(code, invert=not args.dark))
        if args.png:
            _write(Path(args.png), qr.png(code, scale=args.scale))
        if args.svg:
            _write(Path(args.svg), qr.svg(code, label="QR code of a Telegram proxy link").encode())
    except QrError as exc:
        raise CommandFailed(str(exc), code=EXIT_USAGE) from None
    shape = f"QR version {code.version}, level {code.level}, {code.size + 8} modules wide"
    data = {"version": code.version, "level": code.level, "modules": code.size + 8}
    for kind in ("png", "svg"):
        if getattr(args, kind):
            data[kind] = getattr(args, kind)
            print(f"wrote {getattr(args, kind)} ({shape})", file=sys.stderr)
    if args.json:
        emit(True, "", data)
    return 0


# -- poster -----------------------------------------------------------------------------------


def _links_file(path: Path) -> list[str]:
    lines = read_text(path, "links file").splitlines()
    links = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not links:
        raise CommandFailed(f"{path} has no links (one signed link per line)", code=EXIT_USAGE)
    return links


def config_links(config: Config, host: str | None) -> list[str]:
    """Unsigned links to this machine's ``[relay]`` under ``host`` (or ``local_relay``)."""
    settings = relay_settings(config)
    listen_host, port = settings.listen[0]
    host = host or config.publisher.local_relay or listen_host
    if host in ("0.0.0.0", "::", ""):
        raise CommandFailed("the relay listens on all addresses: give --host PUBLIC-NAME", code=2)
    return [entry["tg"] for entry in secret_links(settings, host, port)]


def batch_links(config: Config, batch: str, count: int, pool: str) -> list[str]:
    """The relays the ring gives ``poster:<batch>`` (``count`` of them), recorded by cohort."""
    relays = healthy_relays(config)
    with open_distributor(config, relays, k=count) as record:
        given = record.assign(f"poster:{batch}", pool, time.time())
    # The rate limit may give the batch its previous set, with a relay that has since left
    # the list: configured relays are all known here, so only one gone from the config drops.
    known = {r.name: r for r in publisher_relays(config)}
    return [
        Link("proxy", known[n].server, known[n].port, known[n].secret_hex).url("tg")
        for n in given.relays
        if n in known
    ]


def poster_links(
    config: Config, batch: str, count: int, pool: str, host: str | None = None
) -> list[str]:
    """A batch's unsigned links: the ring's once a list is built (unless ``host`` is given),
    else this machine's ``[relay]``. Raises ``CommandFailed`` when neither can be had."""
    if ListStore(config.in_data(config.publisher.dir)).path.exists() and not host:
        return batch_links(config, batch, count, pool)
    return config_links(config, host)[:count]


def _entries(args: argparse.Namespace, batch: str) -> list[poster.PosterEntry]:
    now = time.time()
    if args.links:
        links = _links_file(Path(args.links))[: args.count]
        trust = signing.parse_trust_root(read_bytes(_trust_path(args), "trust root"))
        return poster.verified_entries(links, trust, now, args.scheme)
    config = load_config(Path(args.config))
    links = poster_links(config, batch, args.count, args.pool, args.host)
    key = signing.load_secret_key(
        Path(args.key) if args.key else config.in_data(config.signing.key)
    )
    return poster.signed_entries(links, key, now + config.signing.link_expiry, args.scheme)


def _trust_path(args: argparse.Namespace) -> Path:
    if args.trust:
        return Path(args.trust)
    config = load_config(Path(args.config))
    return config.in_data(config.signing.trust)


def poster_command(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_POSTER_LINKS:
        raise CommandFailed(f"--count must be 1-{MAX_POSTER_LINKS}", code=EXIT_USAGE)
    batch = args.batch or time.strftime("%Y-%m-%d", time.gmtime())
    try:
        entries = _entries(args, batch)
        page = poster.render_html(entries, batch, args.level)
        _write(Path(args.out), page.encode("utf-8"))
        if args.pdf:
            poster.render_pdf(Path(args.out), Path(args.pdf), args.chromium)
    except QrError as exc:
        raise CommandFailed(str(exc)) from None
    outputs = [args.out] + ([args.pdf] if args.pdf else [])
    emit(
        args.json,
        f"wrote {' and '.join(outputs)}: {len(entries)} link(s), batch {batch}",
        {"html": args.out, "pdf": args.pdf, "links": [e.link for e in entries], "batch": batch},
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    code = sub.add_parser("qr", parents=[common], help="a QR code of a proxy link")
    code.add_argument("link", help="a signed proxy link (tg://proxy?... or https://t.me/proxy?...)")
    out = code.add_argument_group("output (at least one)")
    out.add_argument("--png", metavar="FILE", help="write a PNG image")
    out.add_argument("--svg", metavar="FILE", help="write an SVG image")
    out.add_argument("--terminal", action="store_true", help="draw the code on stdout")
    code.add_argument("--dark", action="store_true", help="terminal: for dark text on light")
    code.add_argument("--level", choices=tuple(qr.LEVELS), default="M", help="error correction")
    code.add_argument("--scale", type=int, default=8, help="PNG pixels per module (default 8)")
    code.add_argument("--trust", help="trust root (trust.json) to check a signed link against")
    code.set_defaults(func=_qr_entry(code))

    post = sub.add_parser("poster", parents=[common], help="an A4 poster of signed links")
    post.add_argument("--out", required=True, metavar="FILE.html", help="the HTML page to write")
    post.add_argument("--pdf", metavar="FILE.pdf", help="also print it to PDF (needs Chromium)")
    post.add_argument("-c", "--config", default="config.toml", help="config file (TOML)")
    post.add_argument("--batch", help="the poster batch's name (default: today's date)")
    post.add_argument("--count", type=int, default=6, help="links on the poster (default 6)")
    post.add_argument("--links", metavar="FILE", help="signed links, one per line (else: sign now)")
    post.add_argument("--trust", help="trust root for --links (default: [signing] trust)")
    post.add_argument("--key", help="signing key (default: [signing] key)")
    post.add_argument(
        "--pool", choices=("established", "new"), default="established",
        help="distribution pool the batch's relays come from (default established)",
    )  # fmt: skip
    post.add_argument(
        "--host", help="sign this machine's [relay] under this public name, not the list's"
    )
    post.add_argument(
        "--scheme", choices=("tg", "tme"), default="tg", help="link form (default tg)"
    )
    post.add_argument("--level", choices=tuple(qr.LEVELS), default="M", help="error correction")
    post.add_argument("--chromium", help="Chromium executable for --pdf (default: on PATH)")
    post.set_defaults(func=poster_command)


def _qr_entry(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        if not (args.png or args.svg or args.terminal):
            parser.error("give --png FILE, --svg FILE or --terminal")
        return qr_command(args)

    return run
