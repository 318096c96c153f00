"""proxylist: the proxy model, the prober, list building, per-recipient distribution, signed
links for recipients, QR codes and posters (DESIGN.md §6). Depends on ``signing`` only."""

from proxylist.build import Build, ListPolicy, ListStore, Published, build_list, publish
from proxylist.distribute import (
    Assignment,
    Distributor,
    Exposure,
    ExposureReport,
    Ring,
    check_pools,
    epoch_of,
)
from proxylist.distsecret import generate_secret, load_secret
from proxylist.errors import (
    BuildError,
    DistributionError,
    ProbeError,
    ProxylistError,
    QrError,
)
from proxylist.handout import LinkBook
from proxylist.model import (
    STAGES,
    Mode,
    PortResult,
    ProbeResult,
    Relay,
    Stage,
    StageResult,
    relay_from_link,
)
from proxylist.probe import ProbeClient
from proxylist.prober import probe_port, probe_relay, probe_relays

__all__ = [
    "STAGES",
    "Assignment",
    "Build",
    "BuildError",
    "DistributionError",
    "Distributor",
    "Exposure",
    "ExposureReport",
    "LinkBook",
    "ListPolicy",
    "ListStore",
    "Mode",
    "PortResult",
    "ProbeClient",
    "ProbeError",
    "ProbeResult",
    "ProxylistError",
    "Published",
    "QrError",
    "Relay",
    "Ring",
    "Stage",
    "StageResult",
    "build_list",
    "check_pools",
    "epoch_of",
    "generate_secret",
    "load_secret",
    "probe_port",
    "probe_relay",
    "probe_relays",
    "publish",
    "relay_from_link",
]
