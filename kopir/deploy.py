"""What an operator puts on a fresh VPS: a relay's config, its firewall, the systemd units, and
cloud-init user-data that does all of it on first boot.

Theory of operation: the files live in ``deploy/`` (``deploy/systemd/*.service`` as they are,
``deploy/templates/*.in`` with ``@name@`` markers) and ship in the wheel as
``kopir/deployfiles/`` (symlinks in the source tree, like ``kopir/config.example.toml``), so
``kopir deploy ...`` works from an installed package and writes exactly what the repository
shows. Every value put into a template is checked first (a host name, a port, a key line), so
nothing from the command line can break out of the TOML, the shell script or the YAML it lands
in. cloud-init's YAML is written by hand: scalars as JSON strings (a JSON string is a YAML
double-quoted scalar) and files as literal blocks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from signing.fileio import write_atomic

UNITS = {"relay": "kopir-relay.service", "publisher": "kopir.service"}
DEFAULT_DOMAIN = "example.com"
DEFAULT_ADMIN = "kopir-admin"
SSH_PORT = 22
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_MARKER = re.compile(r"@[a-z_]+@")


class DeployError(Exception):
    """A value for a deploy file is unusable; the message names it and says what to give."""


@dataclass(frozen=True)
class RelayPlan:
    """One relay VPS: everything its files are made from."""

    secret: str
    """The relay's 16-byte key, as 32 hex characters."""
    domain: str = DEFAULT_DOMAIN
    """The fake-TLS domain: the HTTPS site the relay looks like, and where probers are sent."""
    ports: tuple[int, ...] = (443,)
    """The ports the relay listens on (all addresses, IPv4); the firewall opens these and SSH."""
    host: str = ""
    """The public name or address clients dial; empty: found on the VPS at first boot."""
    name: str = "default"
    """The secret's name, and the relay's label in the publisher's list (with the host)."""


def new_secret() -> str:
    """A fresh relay key: 16 random bytes as hex."""
    return os.urandom(16).hex()


# -- checking what comes from the command line ------------------------------------------------


def check_domain(text: str) -> str:
    """A DNS name with at least two labels, lower-cased; ``DeployError`` otherwise."""
    name = text.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(p) for p in labels):
        raise DeployError(
            f"{text!r} is not a domain name: give a web site's name such as www.example.org "
            "(letters, digits, hyphens and dots)"
        )
    if labels[-1].isdigit():
        raise DeployError(f"{text!r} is not a domain name: give a name, not an IP address")
    return name


def check_host(text: str) -> str:
    """A public host name or IP address for links; ``DeployError`` otherwise."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        pass
    try:
        return check_domain(text)
    except DeployError:
        raise DeployError(
            f"{text!r} is not a host name or IP address: give the relay's public name or address"
        ) from None


def check_ports(ports: list[int]) -> tuple[int, ...]:
    """Distinct TCP ports, not SSH's; ``DeployError`` otherwise."""
    for port in ports:
        if not 1 <= port <= 65535:
            raise DeployError(f"port {port} is out of range: give 1 to 65535")
        if port == SSH_PORT:
            raise DeployError(f"port {SSH_PORT} is SSH's: give the relay another port")
    if len(set(ports)) != len(ports):
        raise DeployError("a port is given twice: give each port once")
    return tuple(ports) or (443,)


def check_user_name(text: str) -> str:
    """A Unix user name for the admin account; ``DeployError`` otherwise."""
    if not _NAME.fullmatch(text) or text == "root":
        raise DeployError(
            f"{text!r} cannot be the admin user: give a lower-case name such as kopir-admin"
        )
    return text


def read_ssh_key(path: Path) -> str:
    """The one public key in an OpenSSH ``.pub`` file; ``DeployError`` if it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeployError(f"{path}: no such file: give your SSH public key (a .pub file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path}: cannot read it: {getattr(exc, 'strerror', exc)}") from None
    if "PRIVATE KEY" in text:
        raise DeployError(f"{path} is a private key: give the public one ({path}.pub)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fields = lines[0].split() if len(lines) == 1 else []
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES or not _base64(fields[1]):
        raise DeployError(
            f"{path} is not an SSH public key: give one line such as 'ssh-ed25519 AAAA... you@host'"
        )
    return " ".join(fields)


def _base64(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", text) is not None and len(text) % 4 == 0


def default_ssh_key(home: Path) -> Path:
    """The operator's own public key in ``~/.ssh``; ``DeployError`` when there is none."""
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        if (home / ".ssh" / name).is_file():
            return home / ".ssh" / name
    raise DeployError(
        f"no SSH public key in {home / '.ssh'}: give one with --ssh-key FILE "
        "(ssh-keygen -t ed25519 makes one)"
    )


# -- the files --------------------------------------------------------------------------------


def packaged(name: str) -> str:
    """A file from ``kopir/deployfiles`` (``deploy/`` in the repository)."""
    return resources.files("kopir").joinpath("deployfiles", name).read_text(encoding="utf-8")


def unit(which: str) -> str:
    """The systemd unit ``relay`` (kopir-relay.service) or ``publisher`` (kopir.service)."""
    return packaged(UNITS[which])


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``@name@`` markers; a marker without a value is a bug, so it raises."""
    text = packaged(template)
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = _MARKER.search(text)
    if left:
        raise AssertionError(f"{template}: {left.group()} has no value")
    return text


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def relay_config(plan: RelayPlan) -> str:
    """``/etc/kopir/relay.toml``: listen on every port, fake-TLS, the real DCs, one secret."""
    listen = ", ".join(json.dumps(f"0.0.0.0:{port}") for port in plan.ports)
    return render(
        "relay.toml.in",
        {"made": _today(), "listen": listen, "domain": plan.domain, "name": plan.name,
         "secret": plan.secret},
    )  # fmt: skip


def firewall(ports: tuple[int, ...]) -> str:
    """``/etc/nftables.conf``: SSH and ``ports`` in, the rest of inbound dropped."""
    opened = ", ".join(str(p) for p in (SSH_PORT, *ports))
    return render("nftables.conf.in", {"ports": opened})


def publisher_entry(plan: RelayPlan, host: str | None = None) -> str:
    """The ``[[publisher.relays]]`` table for this relay, for the publisher's config.toml."""
    server = host if host is not None else plan.host
    label = f"{server or 'relay'}-{plan.name}"
    lines = [
        "[[publisher.relays]]",
        f"name = {json.dumps(label)}",
        f"server = {json.dumps(server)}",
        f"port = {plan.ports[0]}",
        f"key = {json.dumps(plan.secret)}",
        'mode = "ee"',
        f"domain = {json.dumps(plan.domain)}",
    ]
    if plan.ports[1:]:
        lines.append(f"alt_ports = [{', '.join(str(p) for p in plan.ports[1:])}]")
    return "\n".join(lines)


def first_boot(plan: RelayPlan, package: str) -> str:
    """The script cloud-init runs once: user, install, firewall, unit, links."""
    entry = publisher_entry(plan, plan.host or "$HOST")  # expanded by the script's here-doc
    return render(
        "relay-first-boot.sh.in",
        {"package": shlex.quote(package), "host": shlex.quote(plan.host),
         "publisher_entry": entry},
    )  # fmt: skip


def cloud_init(plan: RelayPlan, ssh_key: str, package: str, admin: str = DEFAULT_ADMIN) -> str:
    """cloud-init user-data for a relay VPS (``#cloud-config``)."""
    entry = publisher_entry(plan, plan.host or "RELAY-ADDRESS")
    comment = "\n".join(f"#   {line}" for line in entry.splitlines())
    return render(
        "relay-user-data.yaml.in",
        {
            "made": _today(),
            "admin": admin,
            "ports": ", ".join(str(p) for p in plan.ports),
            "package_comment": package.replace("\n", " "),
            "publisher_comment": comment,
            "ssh_key": json.dumps(ssh_key),
            "relay_toml": _block(relay_config(plan)),
            "nftables": _block(firewall(plan.ports)),
            "unit": _block(unit("relay")),
            "first_boot": _block(first_boot(plan, package)),
        },
    )


def _block(text: str, indent: int = 6) -> str:
    """``text`` as the body of a YAML literal block (``content: |``) at ``indent`` spaces."""
    pad = " " * indent
    return "\n".join(pad + line if line else "" for line in text.rstrip("\n").splitlines())


def write_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` whole (0600 by default: it may hold a secret)."""
    try:
        write_atomic(path, text.encode("utf-8"), mode)
    except OSError as exc:
        raise DeployError(f"{path}: cannot write it: {exc.strerror or exc}") from None
