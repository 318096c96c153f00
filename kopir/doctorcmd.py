"""``kopir doctor [-c FILE] [--json]``: run the checks in ``kopir.doctor`` and print one line
each, with what to fix. Exit 0 when nothing failed (warnings allowed), 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kopir.output import EXIT_INVALID, EXIT_OK, emit

if TYPE_CHECKING:
    from kopir.doctorcheck import Check

LABELS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(args: argparse.Namespace) -> int:
    from kopir.doctor import diagnose  # aiohttp and sockets only for this command

    checks = asyncio.run(diagnose(Path(args.config)))
    failed = any(c.status == "fail" for c in checks)
    data = {
        "ok": not failed,
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks
        ],
    }
    emit(args.json, _human(checks), data)
    return EXIT_INVALID if failed else EXIT_OK


def _line(check: Check) -> str:
    fix = f" -> fix: {check.fix}" if check.fix and check.status != "ok" else ""
    return f"{LABELS[check.status]}  {check.name}: {check.detail}{fix}"


def _human(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in LABELS}
    summary = f"doctor: {counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)"
    return "\n".join([*(_line(c) for c in checks), summary])


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    parser = sub.add_parser(
        "doctor",
        parents=[common],
        help="check clock, ports, mask host, DCs, key permissions and the config",
        description=(
            "Check that this machine can run kopir: the config, the listen ports, the mask "
            "host, every DC, key file permissions, and the clock against an HTTP Date header "
            "([doctor] time_url). Each failure says what to fix. Exit 0 unless a check fails."
        ),
    )
    parser.add_argument("-c", "--config", default="config.toml", help="config file (TOML)")
    parser.set_defaults(func=doctor)
