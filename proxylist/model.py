"""The proxy model shared by the prober, the builder and distribution.

A :class:`Relay` is one configured endpoint an operator runs: where it listens, which mode it
speaks and the 16-byte key behind its secret. A :class:`ProbeResult` is what the prober learned
about one relay: for every port it tried, how far the handshake got (the stages below, in
order) and how long it took.

Stages (DESIGN.md §6 "proxylist", PROTOCOLS.md "A full-path probe"):

- ``connect``: the TCP connection opened;
- ``tls-hmac``: the fake-TLS ServerHello carried an HMAC only the secret's holder can make
  (``ee`` relays only; a ``dd`` or ``classic`` relay skips it);
- ``dc``: the obfuscated2 init and ``req_pq_multi`` went through and a ``resPQ`` echoing our
  nonce came back, so the whole path to Telegram works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from signing import Link, parse_link
from signing.errors import VerificationError

Mode = Literal["ee", "dd", "classic"]
Stage = Literal["connect", "tls-hmac", "dc"]
STAGES: tuple[Stage, ...] = ("connect", "tls-hmac", "dc")
_PREFIX = {"ee": "ee", "dd": "dd", "classic": ""}


@dataclass(frozen=True)
class Relay:
    """One relay endpoint from the operator's config."""

    name: str
    """A label unique within the config; the distribution ring keys on it."""
    server: str
    """Host name or IP address as clients should dial it (lower case)."""
    port: int
    key: bytes
    """The 16-byte key; the link secret adds the mode prefix and, for ``ee``, the domain."""
    mode: Mode = "ee"
    domain: str | None = None
    """The fake-TLS SNI domain; required for ``ee``, absent otherwise."""
    alt_ports: tuple[int, ...] = ()
    """Other ports the same relay listens on; the prober tries each."""
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.key) != 16:
            raise ValueError(f"relay {self.name!r}: the key must be 16 bytes, got {len(self.key)}")
        if (self.mode == "ee") != bool(self.domain):
            raise ValueError(f"relay {self.name!r}: an ee relay needs a domain; others take none")
        for port in (self.port, *self.alt_ports):
            if not 1 <= port <= 65535:
                raise ValueError(f"relay {self.name!r}: port {port} is out of range 1-65535")

    @property
    def ports(self) -> tuple[int, ...]:
        """The main port first, then the alternatives, without repeats."""
        return tuple(dict.fromkeys((self.port, *self.alt_ports)))

    @property
    def secret_hex(self) -> str:
        """The link secret in canonical lower-case hex (prefix, key, then the domain's bytes)."""
        tail = self.domain.encode("ascii").hex() if self.domain else ""
        return _PREFIX[self.mode] + self.key.hex() + tail


def relay_from_link(text: str, name: str = "") -> Relay:
    """The relay a proxy link (any form ``signing.parse_link`` reads) points at.

    Raises ``ValueError`` with the reason for a link that is malformed, a ``socks`` link, or
    an ``ee`` secret whose domain is not ASCII. ``name`` defaults to ``server:port``.
    """
    try:
        link: Link = parse_link(text)
    except VerificationError as exc:
        raise ValueError(f"not a proxy link: {exc}") from None
    if link.type != "proxy":
        raise ValueError("a socks link is not an MTProto relay")
    raw = bytes.fromhex(link.secret)
    mode: Mode = "classic"
    domain = None
    if len(raw) > 16 and raw[0] == 0xDD:
        mode = "dd"
    elif len(raw) > 16 and raw[0] == 0xEE:
        mode, domain = "ee", raw[17:].decode("ascii", errors="strict")
    key = raw[1:17] if mode != "classic" else raw
    return Relay(name or f"{link.server}:{link.port}", link.server, link.port, key, mode, domain)


@dataclass(frozen=True)
class StageResult:
    """The outcome of one stage on one port."""

    stage: Stage
    ok: bool
    detail: str = ""
    """Why it failed (``timeout``, ``refused``, ``bad hmac``, ...); empty on success."""
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class PortResult:
    """Everything tried on one port, in stage order; stops at the first failure."""

    port: int
    stages: tuple[StageResult, ...]
    rtt_ms: float | None = None
    """The TCP connect round trip, when the connection opened."""

    @property
    def ok(self) -> bool:
        return bool(self.stages) and all(s.ok for s in self.stages)

    @property
    def failed_stage(self) -> Stage | None:
        """The first stage that failed, or ``None`` when every stage passed."""
        return next((s.stage for s in self.stages if not s.ok), None)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe round learned about one relay."""

    relay: Relay
    ports: tuple[PortResult, ...]
    at: float
    """Unix time the probe finished."""

    @property
    def ok(self) -> bool:
        """Healthy when at least one port passed every stage."""
        return any(p.ok for p in self.ports)

    @property
    def working_ports(self) -> tuple[int, ...]:
        return tuple(p.port for p in self.ports if p.ok)

    @property
    def ports_tried(self) -> tuple[int, ...]:
        return tuple(p.port for p in self.ports)

    @property
    def rtt_ms(self) -> float | None:
        """The best connect RTT among the working ports."""
        rtts = [p.rtt_ms for p in self.ports if p.ok and p.rtt_ms is not None]
        return min(rtts) if rtts else None
