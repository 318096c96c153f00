"""``kopir verifier --out F.html``: write the offline verifier page for citizens.

The page embeds the trust root (``--trust FILE``, else the config's ``[signing] trust`` in the
data dir) and checks signed links in the browser with no network; ``kopir.verifier`` builds it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from kopir.config import load_config
from kopir.output import EXIT_USAGE, CommandFailed, emit, warn
from kopir.verifier import VerifierError, load_trust, render_verifier
from signing.fileio import read_bytes, write_atomic


def _trust_path(args: argparse.Namespace) -> Path:
    if args.trust:
        return Path(args.trust)
    config = load_config(Path(args.config))
    return config.in_data(config.signing.trust)


def verifier_command(args: argparse.Namespace) -> int:
    trust_path = _trust_path(args)
    data = read_bytes(trust_path, "trust root")
    label = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        root = load_trust(data)
        page = render_verifier(data, now_label=label)
    except VerifierError as exc:
        raise CommandFailed(f"{trust_path}: {exc}", code=EXIT_USAGE) from None
    link_keys = sorted(key.name for key in root.link_keys.values())
    if not link_keys:
        warn(f"warning: {trust_path} names no key with the 'links' role: the page trusts no link")
    out = Path(args.out)
    try:
        write_atomic(out, page.encode("utf-8"))
    except OSError as exc:
        raise CommandFailed(f"cannot write {out}: {exc.strerror or exc}") from None
    emit(
        args.json,
        f"wrote {out}: offline verifier for trust root v{root.version} "
        f"(link keys: {', '.join(link_keys) or 'none'})",
        {"out": str(out), "trust": str(trust_path), "version": root.version, "keys": link_keys},
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    cmd = sub.add_parser(
        "verifier", parents=[common], help="write the offline verifier page (one HTML file)"
    )
    cmd.add_argument("--out", required=True, metavar="FILE.html", help="the page to write")
    cmd.add_argument("--trust", help="trust root to embed (default: [signing] trust)")
    cmd.add_argument("-c", "--config", default="config.toml", help="config file (TOML)")
    cmd.set_defaults(func=verifier_command)
