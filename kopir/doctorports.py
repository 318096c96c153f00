"""``kopir doctor``'s listen-port checks: can each address ``kopir run`` listens on be bound,
and if one is taken, by which process.

A port in use is traced to its process through ``/proc/net/tcp*`` and ``/proc/PID/fd``
(Linux). Held by a running kopir it is fine; held by anything else it is a failure naming that
process. Two of kopir's own servers given one port is a failure too, though each is free now.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from kopir.bot import resolve_secret
from kopir.config import Config
from kopir.doctorcheck import Check, ok
from relay import parse_host_port


def listen_addresses(config: Config) -> list[tuple[str, str]]:
    """(config key, host:port) of everything ``kopir run`` listens on."""
    found = [("[relay] listen", text) for text in config.relay.listen]
    if config.relay.metrics_listen:
        found.append(("[relay] metrics_listen", config.relay.metrics_listen))
    if config.web.listen:
        found.append(("[web] listen", config.web.listen))
    if config.bot.mode == "webhook" and resolve_secret(config.bot.token, os.environ):
        found.append(("[bot] webhook_listen", config.bot.webhook_listen))
    return found


def shared_ports(addresses: list[tuple[str, str]]) -> list[Check]:
    """Two of our own servers on one port: each is free now, but kopir run would clash."""
    keys: dict[int, list[str]] = {}
    for key, text in addresses:
        try:
            keys.setdefault(parse_host_port(text)[1], []).append(key)
        except ValueError:
            continue  # reported by check_port
    return [
        Check(
            f"port {port}",
            "fail",
            f"used by both {' and '.join(names)}",
            f"give {names[-1]} another port",
        )
        for port, names in keys.items()
        if len(names) > 1 and port != 0
    ]


def check_port(key: str, text: str) -> Check:
    name = f"port {text}"
    try:
        host, port = parse_host_port(text)
    except ValueError as exc:
        return Check(name, "fail", f"{key}: {exc}", 'write it as "host:port", e.g. "0.0.0.0:443"')
    try:
        _try_bind(host, port)
    except socket.gaierror as exc:
        return Check(name, "fail", f"{key}: cannot resolve {host}: {exc.strerror}", "fix the host")
    except OSError as exc:
        return _bind_failure(name, key, host, port, exc)
    return ok(name, f"{key}: free")


def _try_bind(host: str, port: int) -> None:
    """Bind (and close) a socket for each address ``host`` means, as the servers will."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)


def _bind_failure(name: str, key: str, host: str, port: int, exc: OSError) -> Check:
    if exc.errno == errno.EADDRINUSE:
        owner = port_owner(port)
        if owner is not None and is_kopir(owner[1]):
            return ok(
                name, f"{key}: in use by a running kopir (pid {owner[0]}: {_describe(owner)})"
            )
        who = f"pid {owner[0]} ({_describe(owner)})" if owner else "another process"
        return Check(
            name, "fail", f"{key}: taken by {who}", f"stop {who}, or give {key} a free port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        detail = f"{key}: {host} is not an address of this machine"
        return Check(name, "fail", detail, "use one of its addresses (ip -br addr), or 0.0.0.0")
    if exc.errno == errno.EACCES and port < 1024:
        return Check(
            name,
            "fail",
            f"{key}: port {port} needs privileges to bind",
            "give kopir CAP_NET_BIND_SERVICE (systemd AmbientCapabilities) or use a port >= 1024",
        )
    return Check(name, "fail", f"{key}: cannot bind: {exc.strerror or exc}", f"check {key}")


def port_owner(port: int) -> tuple[int, list[str]] | None:
    """(pid, argv) of a process listening on TCP ``port``, when this user may see it."""
    inodes = set(_listening_inodes(port))
    if not inodes:
        return None
    for pid in _pids():
        fd_dir = f"/proc/{pid}/fd"
        try:
            links = [os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)]
            if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().decode("utf-8", "replace").split("\0")
                return pid, [a for a in argv if a]
        except OSError:
            continue  # gone, or another user's
    return None


def _pids() -> Iterator[int]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def _listening_inodes(port: int) -> Iterator[str]:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[-1], 16) == port:
                yield fields[9]


def is_kopir(argv: list[str]) -> bool:
    """``kopir ...``, ``python /path/kopir ...`` or ``python -m kopir.cli ...``."""
    if any(Path(arg).name == "kopir" for arg in argv[:2]):
        return True
    return "-m" in argv[:2] and len(argv) > 2 and argv[2].split(".")[0] == "kopir"


def _describe(owner: tuple[int, list[str]]) -> str:
    argv = owner[1]
    if not argv:
        return "?"
    if is_kopir(argv):
        start = 2 if argv[1:2] == ["-m"] else 1 if Path(argv[1]).name == "kopir" else 0
        words = [a for a in argv[start + 1 :] if not a.startswith("-")][:2]
        return " ".join(["kopir", *words])
    return " ".join([Path(argv[0]).name, *argv[1:3]])[:60]
