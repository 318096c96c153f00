"""``kopir init``: a config from the example, and a data directory with every key, made once.

The work is in ``kopir.setup``; this module parses the arguments and prints what was made or
kept, the online key's id, and the command to run next.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from kopir.output import CommandFailed, emit
from kopir.setup import InitReport, SetupError, initialize
from signing import PASSPHRASE_ENV


def init(args: argparse.Namespace) -> int:
    passphrase = os.environ.get(PASSPHRASE_ENV) or None
    try:
        report = initialize(
            Path(args.config),
            Path(args.data) if args.data else None,
            force_config=args.force_config,
            passphrase=passphrase.encode("utf-8") if passphrase else None,
        )
    except SetupError as exc:
        raise CommandFailed(str(exc)) from None
    next_command = f"kopir run -c {shlex.quote(args.config)}"
    emit(args.json, _human(report, next_command), _data(report, next_command))
    return 0


def _human(report: InitReport, next_command: str) -> str:
    lines = [f"kopir init: config {report.config_path}, data in {report.data_dir}"]
    lines += [f"  {item.line()}" for item in report.items]
    if report.relay_secret:
        lines.append(f'  made  relay secret "default" in {report.config_path}')
    elif report.kept_secret:
        lines.append(
            f'  kept  relay secret "default" in {report.config_path}: the replaced config\'s, '
            "so links already handed out keep working (the replaced config is in the .bak file)"
        )
    elif not report.config.made:
        lines.append("  (the config was kept as it is: no relay secret was added)")
    lines.append(f"key id: {report.data.key_id} (the online signing key; share its .pub)")
    lines.append(f"next:   {next_command}")
    return "\n".join(lines)


def _data(report: InitReport, next_command: str) -> dict[str, Any]:
    return {
        "config": str(report.config_path),
        "data_dir": str(report.data_dir),
        "items": [
            {
                "what": item.what,
                "path": str(item.path),
                "made": item.made,
                "mode": f"{item.mode:04o}",
                "note": item.note,
            }
            for item in report.items
        ],
        "relay_secret": report.relay_secret,
        "kept_relay_secret": report.kept_secret,
        "key_id": report.data.key_id,
        "next": next_command,
    }


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    parser = sub.add_parser(
        "init",
        parents=[common],
        help="make a config and a data dir with keys, log and trust root (never overwrites)",
        description=(
            "Write a config from the example and make the data directory: the online signing "
            "key, the log and its key, a trust root naming the key, the distribution secret, "
            "the subscriber key and a relay secret. Existing keys are kept. With "
            f"{PASSPHRASE_ENV} set, a new signing key is encrypted with it."
        ),
    )
    parser.add_argument(
        "-c", "--config", default="config.toml", help="the config to write (default config.toml)"
    )
    parser.add_argument("--data", help="the data directory (default: data beside the config)")
    parser.add_argument(
        "--force-config",
        action="store_true",
        help="write a new config even if one exists (the old one is kept as a .bak file)",
    )
    parser.set_defaults(func=init)
