"""Exception types of the proxylist package.

Every error the package raises on purpose derives from :class:`ProxylistError`, so the CLI can
turn any of them into one clear line and an exit code.
"""

from __future__ import annotations


class ProxylistError(Exception):
    """Base class for errors the proxylist package raises on purpose."""


class ProbeError(ProxylistError):
    """A relay's answer to the prober is not what a genuine relay sends.

    ``detail`` is the short label that ends up in ``StageResult.detail`` (``bad hmac``,
    ``bad record``, ``bad resPQ``, ...); the message says what was wrong with the bytes.
    """

    def __init__(self, detail: str, message: str = "") -> None:
        self.detail = detail
        self.message = message
        super().__init__(f"{detail}: {message}" if message else detail)


class DistributionError(ProxylistError):
    """Distribution cannot hand out relays as asked (an empty pool, a bad secret, a bad store)."""


class BuildError(ProxylistError):
    """A list version cannot be built or stored; the message says what to fix."""


class QrError(ProxylistError):
    """A QR code or poster cannot be made (text too long, a bad size, a missing renderer)."""
