"""The ``outbox`` backend: messages become files in the data dir instead of SMS.

It is the default, so the whole pipeline runs with no provider: each accepted part is written
as ``<outbox>/<queue id>.json`` (atomically). For people, ``<outbox>/outbox.log`` gets a line
per whole message, as the recipient's phone would show it: the parts of a concatenated SMS
are joined once the last one arrives (``kopir verify sms - < outbox.log`` checks every link in
them). A part whose siblings are still to come survives a restart: ``start`` picks the parts
of unfinished messages up from the newest part files. The files name the recipient by keyed
reference only, never by number, so an outbox on a seized laptop reveals no one. The outbox
"delivers" at once: it reports a ``delivered`` receipt for every message it accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from smsgw.backend import InboundHandler, OutgoingSms, Receipt, ReceiptHandler, SendResult
from smsgw.segment import concatenation

# Concatenated messages still waiting for a part; the oldest are given up beyond this (their
# parts stay in their JSON files, only the joined log line is lost).
MAX_INCOMPLETE = 10_000
# How many of the newest part files ``start`` reads for unfinished messages: a message's parts
# are queued together, so a part waiting for its siblings is among the newest.
RESUME_FILES = 1_000


class OutboxBackend:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self._on_receipt: ReceiptHandler | None = None
        # (recipient ref, concatenation reference, total) -> {seq: (queue id, text)}
        self._incomplete: dict[tuple[str, int, int], dict[int, tuple[int, str]]] = {}

    async def start(self, on_receipt: ReceiptHandler, on_inbound: InboundHandler) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._on_receipt = on_receipt
        self._resume()

    def _resume(self) -> None:
        """Take up the unfinished concatenated messages among the newest part files, so a
        restart between a message's parts still logs it whole. A message all of whose parts
        are on disk was logged when its last part came."""
        found: dict[tuple[str, int, int], dict[int, tuple[int, str]]] = {}
        for path in sorted(self.dir.glob("*.json"))[-RESUME_FILES:]:
            part = _read_part(path)
            if part is not None:
                key, seq, entry = part
                found.setdefault(key, {})[seq] = entry
        for key, parts in found.items():
            if len(parts) < key[2]:
                self._incomplete.setdefault(key, {}).update(parts)

    async def send(self, batch: Sequence[OutgoingSms]) -> list[SendResult]:
        results = []
        for sms in batch:
            provider_id = uuid.uuid4().hex
            try:
                self._write(sms, provider_id)
            except OSError as exc:
                results.append(SendResult(sms.message_id, "retry", error=f"outbox: {exc.strerror}"))
                continue
            results.append(SendResult(sms.message_id, "accepted", provider_id))
        # Receipts come after the results, as from a real provider: the worker must have
        # recorded each provider id before the receipt can match it.
        loop = asyncio.get_running_loop()
        for result in results:
            if result.status == "accepted" and self._on_receipt and result.provider_id:
                loop.call_soon(self._on_receipt, Receipt(result.provider_id, "delivered"))
        return results

    async def stop(self) -> None:
        self._on_receipt = None

    def _write(self, sms: OutgoingSms, provider_id: str) -> None:
        record = {
            "id": sms.message_id,
            "provider_id": provider_id,
            "to_ref": sms.ref,
            "text": sms.text,
            "data_coding": sms.data_coding,
            "esm_class": sms.esm_class,
            "short_message": sms.short_message.hex(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
        _write_atomic(self.dir / f"{sms.message_id:012d}.json", data)
        whole = self._whole(sms)
        if whole is None:
            return
        ids, text = whole
        line = f"{record['time']} message {ids} to {sms.ref[:12]}: {text}\n"
        with open(self.dir / "outbox.log", "a", encoding="utf-8") as log:
            log.write(line)

    def _whole(self, sms: OutgoingSms) -> tuple[str, str] | None:
        """The queue ids and text of the message this part completes, or None while parts of
        it are still to come."""
        concat = concatenation(sms.short_message, sms.esm_class)
        if concat is None:
            return str(sms.message_id), sms.text
        reference, total, seq = concat
        key = (sms.ref, reference, total)
        parts = self._incomplete.setdefault(key, {})
        if seq in parts:  # the 8-bit reference came round again: a new message, not a retry
            parts.clear()
        parts[seq] = (sms.message_id, sms.text)
        if len(parts) < total:
            if len(self._incomplete) > MAX_INCOMPLETE:
                del self._incomplete[next(iter(self._incomplete))]
            return None
        del self._incomplete[key]
        ordered = [parts[n] for n in sorted(parts)]
        return "+".join(str(i) for i, _ in ordered), "".join(t for _, t in ordered)


def _read_part(path: Path) -> tuple[tuple[str, int, int], int, tuple[int, str]] | None:
    """A part file's ``(key, seq, (queue id, text))`` as ``_whole`` keeps it, or None for a
    message that stands alone and for a file that is not a well-formed part (skipped: the
    outbox must start whatever lies in its directory)."""

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
        fields = [record[k] for k in ("short_message", "esm_class", "to_ref", "id", "text")]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, RecursionError):
        return None  # ValueError: not JSON, NaN/Infinity, an int of more digits than int() reads
    hex_message, esm_class, ref, message_id, text = fields
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (esm_class, message_id)):
        return None
    if not 0 <= esm_class <= 0xFF or not 0 <= message_id < 2**63:  # a byte; a queue row id
        return None
    if not all(isinstance(x, str) for x in (hex_message, ref, text)):
        return None
    try:
        ref.encode("utf-8"), text.encode("utf-8")  # outbox.log cannot hold a lone surrogate
        concat = concatenation(bytes.fromhex(hex_message), esm_class)
    except ValueError:  # UnicodeEncodeError, or not hex
        return None
    if concat is None:
        return None
    reference, total, seq = concat
    return (ref, reference, total), seq, (message_id, text)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_outbox(directory: Path) -> list[dict[str, object]]:
    """Every message in an outbox, oldest first (for tests, the e2e rehearsal and people)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        records.append(json.loads(path.read_text(encoding="utf-8")))
    return records
