"""Exception types of the relay package."""

from __future__ import annotations


class RelayError(Exception):
    """Base class for errors the relay raises on purpose."""


class HandshakeError(RelayError):
    """A client's first bytes are not a valid handshake for this relay.

    ``reason`` is a short label (``bad-hmac``, ``replay``, ``time-skew``, ``unknown-secret``...)
    used in metrics; such clients are handed to the mask host, never told why.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ConfigError(RelayError):
    """Relay settings that cannot work (bad secret, bad address)."""


class ListenError(RelayError):
    """The relay cannot listen where its settings say (the port is taken, the address is not
    this machine's); the message names the address and says why."""
