"""``kopir audit --from URL|DIR``: check what a publisher published (the work is in
``kopir.audit``); exit 0 when clean, 1 on any finding, 2 when the audit cannot run."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from kopir.audit import Report
from kopir.auditrun import AuditState, Options, run_audit
from kopir.auditsource import AuditError, Source, open_source
from kopir.output import EXIT_USAGE, CommandFailed, emit
from kopir.signcmd import default_state_dir
from signing import SigningError
from signing.fileio import read_bytes

HELP = """\
Checks a publisher's published material: the trust root, every list version's signatures
and threshold, the chain of versions (each names the SHA-256 of the one before), log inclusion
of every version and consistency with the checkpoints seen by earlier audits (kept in the
state dir), and a probe of every listed relay. Exit 0 when clean, 1 on any finding, 2 when
the audit cannot run.

Pass --trust with a trust root you obtained independently (a poster, the offline verifier,
a copy from before the crisis): without it the audit trusts the root the publisher serves,
which proves only that the publisher agrees with itself.
"""


async def _audit(
    source: Source, anchor: tuple[bytes, str] | None, args: argparse.Namespace
) -> Report:
    state = AuditState(Path(args.state) if args.state else default_state_dir())
    options = Options(not args.no_probe, args.probe_timeout, args.concurrency)
    try:
        return await run_audit(source, anchor, state, time.time(), options)
    finally:
        await source.close()


def audit_command(args: argparse.Namespace) -> int:
    if not args.probe_timeout > 0 or args.concurrency < 1:
        raise CommandFailed("--probe-timeout must be above 0 and --concurrency at least 1", 2)
    anchor = None
    if args.trust:
        try:
            anchor = (read_bytes(Path(args.trust), "trust root"), f"{args.trust} (--trust)")
        except SigningError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from None
    try:
        report = asyncio.run(_audit(open_source(args.source, args.timeout), anchor, args))
    except AuditError as exc:
        raise CommandFailed(f"cannot audit: {exc}", EXIT_USAGE) from None
    emit(args.json, "\n".join(report.lines()), report.to_json())
    if report.clean:
        return 0
    kinds = sorted({c.kind for c in report.findings})
    print(f"kopir: audit: {len(report.findings)} finding(s): {', '.join(kinds)}", file=sys.stderr)
    return 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="check everything a publisher published",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument(
        "--from", dest="source", required=True, metavar="URL|DIR",
        help="the publisher's web app (https://...) or data dir (as kopir run lays it out)",
    )  # fmt: skip
    audit.add_argument(
        "--trust", metavar="FILE",
        help="the trust root you obtained independently (default: the publisher's own)",
    )  # fmt: skip
    audit.add_argument(
        "--state", metavar="DIR",
        help="where checkpoints seen are remembered (default $KOPIR_STATE_DIR or "
        "~/.local/state/kopir)",
    )  # fmt: skip
    audit.add_argument("--no-probe", action="store_true", help="do not probe the listed relays")
    audit.add_argument(
        "--probe-timeout", type=float, default=10.0, metavar="SECONDS",
        help="per stage of each relay probe (default 10)",
    )  # fmt: skip
    audit.add_argument(
        "--concurrency", type=int, default=50, help="relays probed at once (default 50)"
    )
    audit.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS",
        help="per HTTP request to the publisher (default 30)",
    )  # fmt: skip
    audit.set_defaults(func=audit_command)
