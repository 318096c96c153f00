"""The ``telegram`` host of the rehearsal: the tests' fake DC (``tests/relay/fakedc.FakeDC``,
written from the spec, sharing no code with the relay) in echo mode, on the host's own address
instead of loopback. It answers ``req_pq_multi`` with ``resPQ`` and prints one line per
connection, so the test can count what reached Telegram.

Usage: ``python -m tests.e2e.dcserver HOST PORT``; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Self

from tests.relay.fakedc import FakeDC


class AddressedDC(FakeDC):
    """`FakeDC` listening on ``host:port`` rather than 127.0.0.1."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__("echo")
        self.host, self.wanted = host, port

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, self.wanted)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        print(f"DC connection {self.connections + 1}", flush=True)
        await super().handle(reader, writer)


async def main(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AddressedDC(host, port) as dc:
        print(f"fake DC listening on {host}:{dc.port}", flush=True)
        await stop.wait()
    print(f"fake DC stopped after {dc.connections} connections", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
