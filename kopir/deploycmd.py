"""``kopir deploy cloud-init|relay-config|firewall|unit``: the files that stand up a relay.

``cloud-init --relay`` renders user-data for a fresh VPS with a fresh relay secret; the other
three print (or write with ``--out``) one file each, for the steps of ``deploy/README.md`` done
by hand or by the Ansible playbook. The files and the checks are in ``kopir.deploy``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from kopir import deploy
from kopir.output import EXIT_USAGE, CommandFailed, emit


def _default_package() -> str:
    try:
        return f"kopir[fast]=={metadata.version('kopir')}"
    except metadata.PackageNotFoundError:
        return "kopir[fast]"


def _plan(args: argparse.Namespace) -> deploy.RelayPlan:
    return deploy.RelayPlan(
        secret=deploy.new_secret(),
        domain=deploy.check_domain(args.domain),
        ports=deploy.check_ports(args.port or []),
        host=deploy.check_host(args.host) if getattr(args, "host", None) else "",
    )


def _write(args: argparse.Namespace, text: str, mode: int, *, keep: bool) -> None:
    """``text`` to ``--out``; a file that would lose a secret is kept unless ``--force``."""
    out = Path(args.out)
    if keep and out.exists() and not args.force:
        raise CommandFailed(
            f"{out} exists and may hold a relay's secret: choose another --out, or --force",
            code=EXIT_USAGE,
        )
    deploy.write_file(out, text, mode)


def cloud_init(args: argparse.Namespace) -> int:
    if not args.relay:
        raise CommandFailed("say what the VPS is for: --relay (the only kind so far)", EXIT_USAGE)
    plan = _plan(args)
    key_file = Path(args.ssh_key) if args.ssh_key else deploy.default_ssh_key(Path.home())
    key = deploy.read_ssh_key(key_file)
    package = args.package or _default_package()
    text = deploy.cloud_init(plan, key, package, deploy.check_user_name(args.admin))
    if not args.package:
        print(
            f"kopir: note: the VPS will pip-install {package} from PyPI, where kopir is not "
            "published yet; give --package a wheel URL or a git URL (git+https://...)",
            file=sys.stderr,
        )
    entry = deploy.publisher_entry(plan, plan.host or "RELAY-ADDRESS")
    data = {
        "secret": plan.secret,
        "domain": plan.domain,
        "ports": list(plan.ports),
        "host": plan.host,
        "ssh_key": key,
        "package": package,
        "publisher_entry": entry,
    }
    if not args.out:
        emit(args.json, text.rstrip("\n"), {**data, "user_data": text})
        return 0
    _write(args, text, 0o600, keep=True)
    human = [
        f"wrote {args.out} (mode 0600; it holds the relay's secret): cloud-init user-data for a "
        f"relay on port{'s' if len(plan.ports) > 1 else ''} "
        f"{', '.join(map(str, plan.ports))}, fake-TLS as {plan.domain}, admin {args.admin}",
        "give it to the VPS as user-data; its first boot prints the links",
        "for the publisher's config.toml"
        + ("" if plan.host else " (RELAY-ADDRESS: the VPS's, printed at first boot)")
        + ":",
        entry,
    ]
    emit(args.json, "\n".join(human), {**data, "out": args.out})
    return 0


def relay_config(args: argparse.Namespace) -> int:
    plan = _plan(args)
    text = deploy.relay_config(plan)
    data = {"secret": plan.secret, "domain": plan.domain, "ports": list(plan.ports)}
    if not args.out:
        emit(args.json, text.rstrip("\n"), {**data, "config": text})
        return 0
    _write(args, text, 0o600, keep=True)
    human = f"wrote {args.out} (mode 0600) with a new secret; for the publisher's config.toml:"
    entry = deploy.publisher_entry(plan, "RELAY-ADDRESS")
    emit(args.json, f"{human}\n{entry}", {**data, "out": args.out, "publisher_entry": entry})
    return 0


def firewall(args: argparse.Namespace) -> int:
    text = deploy.firewall(deploy.check_ports(args.port or []))
    return _file(args, text, 0o755)


def unit(args: argparse.Namespace) -> int:
    return _file(args, deploy.unit(args.which), 0o644)


def _file(args: argparse.Namespace, text: str, mode: int) -> int:
    if not args.out:
        emit(args.json, text.rstrip("\n"), {"text": text})
        return 0
    _write(args, text, mode, keep=False)
    emit(args.json, f"wrote {args.out}", {"out": args.out})
    return 0


def run(func: Any) -> Any:
    """Turn ``DeployError`` into one line and exit code 2 (bad input from the command line)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except deploy.DeployError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from None
        return code

    return wrapped


def _relay_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--domain",
        default=deploy.DEFAULT_DOMAIN,
        help="fake-TLS domain: a real HTTPS site the relay looks like (default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        action="append",
        help="a port to listen on, repeat for more (default 443; the first goes in links)",
    )


def _out(parser: argparse.ArgumentParser, force: bool) -> None:
    parser.add_argument("--out", help="write to this file instead of printing")
    if force:
        parser.add_argument("--force", action="store_true", help="replace an existing --out")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    actions = sub.add_parser("deploy", help="files to stand up a relay on a VPS").add_subparsers(
        dest="action", required=True
    )
    init = actions.add_parser(
        "cloud-init", parents=[common], help="cloud-init user-data for a VPS (a fresh secret)"
    )
    init.add_argument("--relay", action="store_true", help="the VPS is a relay")
    _relay_options(init)
    init.add_argument("--ssh-key", help="the admin's SSH public key (default ~/.ssh/id_*.pub)")
    init.add_argument("--host", help="public name or address for links (default: found at boot)")
    init.add_argument("--admin", default=deploy.DEFAULT_ADMIN, help="admin user (%(default)s)")
    init.add_argument(
        "--package", help="what the VPS pip-installs (default kopir[fast]==THIS-VERSION)"
    )
    _out(init, force=True)
    init.set_defaults(func=run(cloud_init))

    config = actions.add_parser(
        "relay-config", parents=[common], help="/etc/kopir/relay.toml with a fresh secret"
    )
    _relay_options(config)
    _out(config, force=True)
    config.set_defaults(func=run(relay_config))

    wall = actions.add_parser("firewall", parents=[common], help="nftables rules for a relay")
    wall.add_argument("--port", type=int, action="append", help="relay port (default 443)")
    _out(wall, force=False)
    wall.set_defaults(func=run(firewall))

    units = actions.add_parser("unit", parents=[common], help="a hardened systemd unit")
    units.add_argument("which", choices=sorted(deploy.UNITS), help="relay or publisher")
    _out(units, force=False)
    units.set_defaults(func=run(unit))
