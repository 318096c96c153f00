"""Prometheus metrics for the relay: counters and gauges with labels, text exposition.

Labels are the secret's name and a reason or direction, never a client address.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

_HELP = {
    "relay_connections_total": ("counter", "Client connections relayed to a DC"),
    "relay_connections_active": ("gauge", "Client connections being relayed now"),
    "relay_bytes_total": ("counter", "Payload bytes relayed, by direction"),
    "relay_handshake_failures_total": ("counter", "Failed handshakes, by reason"),
    "relay_replays_total": ("counter", "Replayed handshakes (masked)"),
    "relay_masked_total": ("counter", "Connections handed to the mask host"),
    "relay_refused_total": ("counter", "Connections refused by a limit"),
}


class Metrics:
    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def add(self, name: str, amount: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.values[name]
        series[key] = series.get(key, 0) + amount

    def inc(self, name: str, **labels: str) -> None:
        self.add(name, 1, **labels)

    def get(self, name: str, **labels: str) -> float:
        return self.values[name].get(tuple(sorted(labels.items())), 0)

    def render(self) -> str:
        lines = []
        for name, (kind, text) in _HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted(self.values.get(name, {}).items()):
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}")
        return "\n".join(lines) + "\n"

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        """A minimal HTTP endpoint: any GET returns the exposition text."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                body = self.render().encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
