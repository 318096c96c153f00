"""The ``kopir`` command line: argparse subcommands, one clear line per error, exit codes.

Exit codes: 0 success or valid; 1 invalid or failed (the reason on stderr); 2 usage or config
error; 141 stdout was closed before everything was written (``kopir ... | head``), ended
quietly. With ``--json`` the result is one JSON object on stdout, failures included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import relay
import signing
import smsgw
from kopir import (
    auditcmd,
    botcmd,
    deploycmd,
    distcmd,
    doctorcmd,
    initcmd,
    listcmd,
    logcmd,
    qrcmd,
    relaycmd,
    signcmd,
    smscmd,
    trustcmd,
    verifiercmd,
)
from kopir.config import ConfigError, load_config
from kopir.output import EXIT_USAGE, CommandFailed, emit
from kopir.setup import SetupError
from proxylist.errors import ProxylistError

EXAMPLES = """\
examples:
  kopir keys generate --name alice --out keys
  kopir trust init --out trust.json --key keys/alice.pub --sign keys/alice.key
  kopir sign link 'tg://proxy?server=relay.example&port=443&secret=...' --key keys/alice.key
  kopir verify link 'https://t.me/proxy?...&sig=...' --trust trust.json
  kopir run -c config.example.toml
"""


def run_main(args: argparse.Namespace) -> int:
    from kopir.runner import run

    config = load_config(Path(args.config))
    return asyncio.run(run(config, once=args.once))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v progress, -vv debug)"
    )
    parser = argparse.ArgumentParser(
        prog="kopir",
        description="kopir: signed Telegram proxy lists for people whose mobile data is cut.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    initcmd.add_parsers(sub, common)
    run = sub.add_parser("run", parents=[common], help="the main job (see README)")
    run.add_argument("-c", "--config", default="config.toml", help="config file (TOML)")
    run.add_argument("--once", action="store_true", help="do one round and exit")
    run.set_defaults(func=run_main)
    signcmd.add_parsers(sub, common)
    trustcmd.add_parsers(sub, common)
    logcmd.add_parsers(sub, common)
    relaycmd.add_parsers(sub, common)
    smscmd.add_parsers(sub, common)
    distcmd.add_actions(listcmd.add_parsers(sub, common), common)
    qrcmd.add_parsers(sub, common)
    doctorcmd.add_parsers(sub, common)
    auditcmd.add_parsers(sub, common)
    verifiercmd.add_parsers(sub, common)
    botcmd.add_parsers(sub, common)
    deploycmd.add_parsers(sub, common)
    return parser


EXIT_STDOUT_CLOSED = 141
"""Exit status when stdout was closed under us (``kopir ... | head``): 128 + SIGPIPE (13), what
a shell reports for a Unix tool that SIGPIPE ended, so ``set -o pipefail`` scripts see the same
status as with ``yes | head``. Python ignores SIGPIPE, so the write fails with EPIPE instead;
:func:`main` turns that into this status with no traceback and no message."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (see the module docstring)."""
    try:
        try:
            code = _main(argv)
        except SystemExit:  # argparse after --help or a usage error: flush what it printed
            _flush_stdout()
            raise
        _flush_stdout()
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not ours to hide
        _silence_stdout()
        return EXIT_STDOUT_CLOSED
    return code


def _flush_stdout() -> None:
    """Flush here, not at interpreter exit, so that a reader who went away is noticed while
    :func:`main` can still handle it. (No stdout at all, ``kopir ... >&-``, is ``None``.)"""
    stdout: TextIO | None = sys.stdout
    if stdout is not None:
        stdout.flush()


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (so a ``BrokenPipeError`` was stdout's own). A pipe
    or socket whose other end is closed polls as an error or hang-up; when that cannot be
    asked, assume it was stdout, by far the likeliest."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, OSError, ValueError):  # no real fd, or no poll() here
        return True
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is still buffered
    does not fail again (the recipe in the Python docs, ``signal`` module, "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    _logging(getattr(args, "verbose", 0))
    try:
        code: int = args.func(args)
        return code
    except CommandFailed as exc:
        return _fail(as_json, str(exc), exc.code, exc.data)
    except ConfigError as exc:
        return _fail(as_json, str(exc), EXIT_USAGE, {})
    except (
        signing.SigningError,
        smsgw.SmsError,
        relay.RelayError,
        ProxylistError,
        SetupError,
    ) as exc:
        return _fail(as_json, str(exc), 1, {})
    except KeyboardInterrupt:
        return _fail(as_json, "interrupted", 130, {})


def _logging(verbose: int) -> None:
    """Warnings and worse by default, to stderr, each one line starting ``kopir:``."""
    level = (logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=level, format="kopir: %(levelname)s: %(name)s: %(message)s")


def _fail(as_json: bool, message: str, code: int, data: dict[str, object]) -> int:
    if as_json:
        emit(True, "", {"error": message, **data})
    print(f"kopir: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
