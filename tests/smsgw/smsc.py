"""Two SMSCs for the SMPP backend's tests.

- ``perl_smsc``: the real Net::SMPP example SMSC (Debian ``libnet-smpp-perl``, DESIGN.md §9),
  run unmodified. It listens on localhost:9900 (hard-coded), forks a child per connection,
  accepts any system_id and password, answers every submit_sm with message_id ``123456789``
  and prints one ``Received #SEQ CMD:NAME`` line per PDU to stdout (nothing else: it does not
  log PDU bodies, which is why the byte-exact checks use the scripted SMSC). A child exits
  after answering ``unbind``, which flushes its stdout.
- ``ScriptedSmsc``: asyncio, raw SMPP 3.4 PDUs with our own minimal codec, on 127.0.0.1:0.
  It throttles chosen submits, sends receipts whose ids are spelled differently from the
  submit_sm_resp ids (``1a2b01`` there, ``00000001A2B01`` in the receipt), sends inbound
  messages and unbinds on request, drops the connection on a chosen submit, calls a hook on each
  submit (the crash test kills the worker from there), and records every PDU it got and the
  most submits it ever had unanswered. ``threaded_smsc`` runs one on its own event loop in a
  thread, for tests that block on a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SMSC_PL = Path("/usr/share/doc/libnet-smpp-perl/examples/smsc.pl")
PERL_PORT = 9900

COMMANDS = {
    "generic_nack": 0x80000000,
    "bind_transceiver": 0x00000009,
    "bind_transceiver_resp": 0x80000009,
    "submit_sm": 0x00000004,
    "submit_sm_resp": 0x80000004,
    "deliver_sm": 0x00000005,
    "deliver_sm_resp": 0x80000005,
    "unbind": 0x00000006,
    "unbind_resp": 0x80000006,
    "enquire_link": 0x00000015,
    "enquire_link_resp": 0x80000015,
}
NAMES = {code: name for name, code in COMMANDS.items()}
HEADER = struct.Struct(">IIII")
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE = 0x001E, 0x0427


# -- the real Net::SMPP SMSC -----------------------------------------------------------------


@dataclass
class PerlSmsc:
    host: str
    port: int
    stdout: Path

    def received(self) -> list[str]:
        """The command names the SMSC's children printed, in order."""
        text = self.stdout.read_text(errors="replace")
        return re.findall(r"^Received #\d+ \d+:(\w+)$", text, re.MULTILINE)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_sync(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextlib.contextmanager
def perl_smsc(tmp_path: Path) -> Iterator[PerlSmsc]:
    """Run ``smsc.pl`` in its own process group; kill the whole group (children too) after."""
    if not SMSC_PL.exists():
        pytest.fail("Net::SMPP's example SMSC is missing: apt-get install libnet-smpp-perl")
    if not wait_sync(lambda: not _port_open(PERL_PORT), 5.0):
        pytest.fail(f"port {PERL_PORT} is taken: another SMSC is running on localhost")
    out, err = tmp_path / "smsc.out", tmp_path / "smsc.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            ["perl", str(SMSC_PL)], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        if not wait_sync(lambda: proc.poll() is not None or _port_open(PERL_PORT), 10.0):
            pytest.fail("smsc.pl did not listen on port 9900 within 10 s")
        if proc.poll() is not None:
            pytest.fail(f"smsc.pl exited: {err.read_text(errors='replace')[-500:]}")
        yield PerlSmsc("localhost", PERL_PORT, out)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# -- a minimal SMPP 3.4 codec ----------------------------------------------------------------


@dataclass(frozen=True)
class Pdu:
    command: str
    status: int
    sequence: int
    body: bytes = b""

    def encode(self) -> bytes:
        return HEADER.pack(16 + len(self.body), COMMANDS[self.command], self.status,
                           self.sequence) + self.body  # fmt: skip


class Reader:
    """Fields of a PDU body, read in order."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def cstring(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value, self.pos = self.data[self.pos : end].decode("latin-1"), end + 1
        return value

    def int8(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1]

    def octets(self, n: int) -> bytes:
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def tlvs(self) -> dict[int, bytes]:
        found = {}
        while self.pos + 4 <= len(self.data):
            tag, length = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            found[tag] = self.octets(length)
        return found


def cstr(value: str) -> bytes:
    return value.encode("latin-1") + b"\0"


@dataclass(frozen=True)
class Bind:
    system_id: str
    password: str
    system_type: str
    interface_version: int

    @classmethod
    def decode(cls, body: bytes) -> Bind:
        r = Reader(body)
        return cls(r.cstring(), r.cstring(), r.cstring(), r.int8())


@dataclass(frozen=True)
class Sm:
    """The body of a submit_sm or deliver_sm (SMPP 3.4 §4.4.1, §4.6.1)."""

    source_addr: str = ""
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    short_message: bytes = b""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        tlvs = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in self.tlvs.items())
        return (
            cstr("") + bytes((self.source_addr_ton, self.source_addr_npi)) + cstr(self.source_addr)
            + bytes((self.dest_addr_ton, self.dest_addr_npi)) + cstr(self.destination_addr)
            + bytes((self.esm_class, 0, 0)) + cstr("") + cstr("")
            + bytes((self.registered_delivery, 0, self.data_coding, 0, len(self.short_message)))
            + self.short_message + tlvs
        )  # fmt: skip

    @classmethod
    def decode(cls, body: bytes) -> Sm:
        r = Reader(body)
        r.cstring()  # service_type
        src_ton, src_npi, src = r.int8(), r.int8(), r.cstring()
        dst_ton, dst_npi, dst = r.int8(), r.int8(), r.cstring()
        esm_class, _protocol_id, _priority = r.int8(), r.int8(), r.int8()
        r.cstring(), r.cstring()  # schedule_delivery_time, validity_period
        registered, _replace, data_coding, _default_id = r.int8(), r.int8(), r.int8(), r.int8()
        short_message = r.octets(r.int8())
        return cls(src, dst, esm_class, registered, data_coding, short_message,
                   src_ton, src_npi, dst_ton, dst_npi, r.tlvs())  # fmt: skip


# -- the scripted SMSC -----------------------------------------------------------------------


@dataclass
class Script:
    """What the scripted SMSC does; tests may change it while it runs."""

    password: str = "secret"
    throttle: set[int] = field(default_factory=set)
    """1-based submit numbers (counted over all connections) answered ESME_RTHROTTLED."""
    drop_on: int | None = None
    """The submit number on which the SMSC drops the TCP connection without answering it."""
    receipts: bool = False
    """Send a DELIVRD receipt after each accepted submit: odd ones in the text, even in a TLV."""
    response_delay: float = 0.0
    on_submit: Callable[[Submitted], None] | None = None
    """Called with each submit as it arrives, before it is answered (or dropped)."""


@dataclass(frozen=True)
class Submitted:
    number: int
    connection: int
    at: float
    sm: Sm
    status: int | None = None
    message_id: str = ""


def submit_id(number: int) -> str:
    """What submit_sm_resp says: lower-case hex."""
    return f"{0x1A2B00 + number:x}"


def receipt_id(number: int) -> str:
    """What the receipt says for the same message: upper-case hex with leading zeros."""
    return f"{0x1A2B00 + number:012X}"


class ScriptedSmsc:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.received: list[tuple[int, Pdu]] = []
        """(connection number, PDU) for every PDU received."""
        self.submits: list[Submitted] = []
        self.max_outstanding = 0
        self.connections = 0
        self.binds: list[Bind] = []
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._outstanding: dict[int, asyncio.TimerHandle] = {}
        self._sequence = 1000  # far from the backend's own numbers
        self._awaiting: dict[int, str] = {}
        self.unmatched: list[Pdu] = []
        """Responses from the backend that answer no request of ours (wrong sequence)."""
        self._changed = asyncio.Event()

    async def start(self) -> ScriptedSmsc:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def commands(self, connection: int | None = None) -> list[str]:
        return [p.command for c, p in self.received if connection in (None, c)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def send_inbound(self, sender: str, short_message: bytes, data_coding: int = 0,
                           ton: int = 1) -> None:  # fmt: skip
        sm = Sm(source_addr=sender, destination_addr="KOPIR", data_coding=data_coding,
                short_message=short_message, source_addr_ton=ton, source_addr_npi=1)  # fmt: skip
        self._send("deliver_sm", sm.encode())

    async def unbind(self) -> None:
        self._send("unbind")

    # -- the connection --

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, self._writer = self.connections, writer
        try:
            while True:
                header = await reader.readexactly(16)
                length, code, status, sequence = HEADER.unpack(header)
                pdu = Pdu(NAMES[code], status, sequence, await reader.readexactly(length - 16))
                self.received.append((number, pdu))
                if not self._handle(number, pdu, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._forget(writer)
            writer.close()
            self._changed.set()

    def _handle(self, connection: int, pdu: Pdu, writer: asyncio.StreamWriter) -> bool:
        """Answer one PDU; False to close the connection."""
        self._changed.set()
        if pdu.command == "bind_transceiver":
            bind = Bind.decode(pdu.body)
            self.binds.append(bind)
            ok = bind.password == self.script.password
            status = 0 if ok else 0x0E
            writer.write(
                Pdu("bind_transceiver_resp", status, pdu.sequence, cstr("SCRIPTED")).encode()
            )
            return ok
        if pdu.command == "submit_sm":
            return self._on_submit(connection, pdu, writer)
        if pdu.command.endswith("_resp") or pdu.command == "generic_nack":
            asked = self._awaiting.pop(pdu.sequence, None)
            if asked is None or pdu.command not in (asked + "_resp", "generic_nack"):
                self.unmatched.append(pdu)
        if pdu.command == "enquire_link":
            writer.write(Pdu("enquire_link_resp", 0, pdu.sequence).encode())
        elif pdu.command == "unbind":
            writer.write(Pdu("unbind_resp", 0, pdu.sequence).encode())
            return False
        elif pdu.command == "unbind_resp":
            return False
        return True

    def _on_submit(self, connection: int, pdu: Pdu, writer: asyncio.StreamWriter) -> bool:
        number = len(self.submits) + 1
        sm = Sm.decode(pdu.body)
        now = asyncio.get_running_loop().time()
        self.submits.append(Submitted(number, connection, now, sm))
        if self.script.on_submit is not None:
            self.script.on_submit(self.submits[-1])
        if number == self.script.drop_on:
            writer.transport.abort()
            return False
        self._outstanding[pdu.sequence] = asyncio.get_running_loop().call_later(
            self.script.response_delay, self._respond, number, pdu.sequence, writer
        )
        self.max_outstanding = max(self.max_outstanding, len(self._outstanding))
        return True

    def _respond(self, number: int, sequence: int, writer: asyncio.StreamWriter) -> None:
        self._outstanding.pop(sequence, None)
        status = 0x58 if number in self.script.throttle else 0
        message_id = submit_id(number) if status == 0 else ""
        old = self.submits[number - 1]
        self.submits[number - 1] = Submitted(old.number, old.connection, old.at, old.sm, status,
                                             message_id)  # fmt: skip
        writer.write(Pdu("submit_sm_resp", status, sequence, cstr(message_id)).encode())
        if status == 0 and self.script.receipts:
            writer.write(self._receipt(number).encode())
        self._changed.set()

    def _receipt(self, number: int) -> Pdu:
        text = (f"id:{receipt_id(number)} sub:001 dlvrd:001 submit date:2401011200 "
                "done date:2401011201 stat:DELIVRD err:000 text:id:999 stat:UNDELIV")  # fmt: skip
        tlvs = {}
        if number % 2 == 0:  # the id only in the TLV, the text without one
            text = text.replace(f"id:{receipt_id(number)} ", "")
            tlvs = {TLV_RECEIPTED_MESSAGE_ID: cstr(receipt_id(number)),
                    TLV_MESSAGE_STATE: bytes((2,))}  # fmt: skip
        sm = Sm(source_addr="77012345678", esm_class=0x04, short_message=text.encode(),
                tlvs=tlvs)  # fmt: skip
        return self._request("deliver_sm", sm.encode())

    def _request(self, command: str, body: bytes = b"") -> Pdu:
        self._sequence += 1
        self._awaiting[self._sequence] = command
        return Pdu(command, 0, self._sequence, body)

    def _send(self, command: str, body: bytes = b"") -> None:
        assert self._writer is not None, "no connection"
        self._writer.write(self._request(command, body).encode())

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        """A connection closed: its unanswered submits will never be answered."""
        if writer is self._writer:
            for handle in self._outstanding.values():
                handle.cancel()
            self._outstanding.clear()


Snapshot = Callable[[], list[Submitted]]


@contextlib.contextmanager
def threaded_smsc(script: Script | None = None) -> Iterator[tuple[ScriptedSmsc, Snapshot]]:
    """A ``ScriptedSmsc`` on its own event loop in a thread, and a way to read its submits.

    The test's thread may then block (on a child process) while the SMSC keeps answering.
    ``Snapshot()`` copies the submits on the SMSC's own thread. On the way out every connection
    is closed and every task finished, so nothing is left for the garbage collector to warn of.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-smsc", daemon=True)
    thread.start()

    def call(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)

    async def start() -> ScriptedSmsc:
        return await ScriptedSmsc(script).start()

    async def snapshot() -> list[Submitted]:
        return list(smsc.submits)

    smsc = call(start())
    try:
        yield smsc, lambda: call(snapshot())
    finally:
        call(_shut_down(smsc))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _shut_down(smsc: ScriptedSmsc) -> None:
    await smsc.close()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
