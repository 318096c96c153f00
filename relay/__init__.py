"""relay: an MTProto proxy (fake-TLS ``ee``, padded ``dd``, classic) with masking and
anti-replay. Depends on nothing else in kopir."""

from relay.dc import DEFAULT_DCS, dc_address, parse_host_port
from relay.errors import ConfigError, HandshakeError, ListenError, RelayError
from relay.obfs2 import Secret
from relay.server import Relay, RelaySettings, ReplayCache, serve
from relay.testdc import LocalTestDC

__all__ = [
    "DEFAULT_DCS",
    "ConfigError",
    "HandshakeError",
    "ListenError",
    "LocalTestDC",
    "Relay",
    "RelayError",
    "RelaySettings",
    "ReplayCache",
    "Secret",
    "dc_address",
    "parse_host_port",
    "serve",
]
