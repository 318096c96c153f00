"""Telegram's data centres: the built-in direct-mode table and config overrides."""

from __future__ import annotations

# Telegram's public direct-mode addresses, port 443 (PROTOCOLS.md "DC addresses").
DEFAULT_DCS: dict[int, tuple[str, int]] = {
    1: ("149.154.175.50", 443),
    2: ("149.154.167.51", 443),
    3: ("149.154.175.100", 443),
    4: ("149.154.167.91", 443),
    5: ("91.108.56.100", 443),
}


def dc_address(index: int, overrides: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """Where to connect for a client's DC index (negative for media, 0 meaning DC 2).

    Media DCs share the main DC's address in direct mode. An unknown index falls back to DC 2,
    as Telegram's own proxies do, so a client with a stale table still gets through.
    """
    number = abs(index) or 2
    if number in overrides:
        return overrides[number]
    return DEFAULT_DCS.get(number, overrides.get(2, DEFAULT_DCS[2]))


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``"1.2.3.4:443"``, ``"[::1]:443"`` or ``"host"`` (with a default port)."""
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        if default_port is None:
            raise ValueError(f"{text!r} needs a port, like 127.0.0.1:8443 or [::1]:8443")
        host, port = text, str(default_port)
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)
