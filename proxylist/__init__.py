"""proxylist: the proxy model, the prober, list building, per-recipient distribution, QR codes
and posters (DESIGN.md §6). Depends on ``signing`` only."""

from proxylist.model import STAGES, Mode, PortResult, ProbeResult, Relay, Stage, StageResult

__all__ = ["STAGES", "Mode", "PortResult", "ProbeResult", "Relay", "Stage", "StageResult"]
