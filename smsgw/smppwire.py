"""SMPP 3.4 without I/O: checked settings, the submit_sm we build, what an SMSC's answers mean.

Theory of operation
-------------------
The SMPP backend's I/O thread (``smsgw.smpp``) moves PDUs; everything it has to *decide* about
their contents lives here, as plain functions of bytes, strings and ``now``:

- ``submit_result``: what a ``submit_sm_resp`` status means (SMPP 3.4 §5.1.3). 0 is
  ``accepted`` with the normalised message id; 0x58 ESME_RTHROTTLED and 0x14 ESME_RMSGQFUL are
  ``retry``; anything else is ``failed``, named by ``status_name``.
- ``receipt_from_fields``: a final ``Receipt`` from a receipt ``deliver_sm`` (``esm_class &
  0x04``), read from the SMPP 3.4 appendix B text (``parse_receipt_text``) or from the
  ``receipted_message_id``/``message_state`` TLVs; ``None`` for news that is not final, or text
  that is not a receipt.
- ``decode_short_message`` and ``e164_sender``: an inbound SMS's text and sender.
- ``TokenBucket``: the throughput limit, with time passed in.
- ``command_length_problem``: whether a PDU's ``command_length`` is one we will read at all
  (16 to ``MAX_PDU_LENGTH`` octets), checked before anything is buffered.
- ``SmppSettings``: checked when made, refusing what smpplib would silently truncate;
  ``bind_error`` says why an SMSC refused our bind.
- ``submit_sm_for``: the ``SubmitSm`` for one ``OutgoingSms``, or why it cannot be sent.
- ``SubmitSm.encode``: the one PDU we send by the thousand, written by us (smpplib's generic
  encoder walks every optional parameter of every PDU and cost ~50 µs a submit, a quarter of
  the whole path); the bytes are the same as smpplib's, which the tests check.

Parsers never raise on what an SMSC sends: garbage gives ``None`` or U+FFFD, never an exception.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import smpplib.consts  # type: ignore[import-untyped]

from smsgw.backend import OutgoingSms, Receipt, ReceiptStatus, SendResult
from smsgw.errors import SmsError
from smsgw.queuemodel import normalize_provider_id
from smsgw.segment import ESC, EXT_DECODE, GSM_DECODE

__all__ = [
    "ESM_RECEIPT",
    "ESM_UDHI",
    "MAX_PDU_LENGTH",
    "MIN_PDU_LENGTH",
    "RETRY_STATUSES",
    "RINVCMDID",
    "RINVPASWD",
    "RINVSYSID",
    "RMSGQFUL",
    "ROK",
    "RTHROTTLED",
    "ReceiptText",
    "SmppError",
    "SmppSettings",
    "SubmitSm",
    "TokenBucket",
    "bind_error",
    "command_length_problem",
    "decode_short_message",
    "e164_sender",
    "parse_receipt_text",
    "receipt_from_fields",
    "status_name",
    "submit_result",
    "submit_sm_for",
]

ROK, RMSGQFUL, RINVPASWD, RINVSYSID, RTHROTTLED = 0x00, 0x14, 0x0E, 0x0F, 0x58
RINVCMDID = 0x03
RETRY_STATUSES = frozenset({RTHROTTLED, RMSGQFUL})
ESM_RECEIPT, ESM_UDHI = 0x04, 0x40
_STATUS_NAMES = {
    value: name.removeprefix("SMPP_")
    for name, value in vars(smpplib.consts).items()
    if name.startswith("SMPP_ESME_") and isinstance(value, int)
}


class ReceiptText(NamedTuple):
    """The fields of a receipt's text that we use (SMPP 3.4 appendix B)."""

    id: str
    stat: str
    err: str | None


_RECEIPT_FIELD = re.compile(r"(?<![A-Za-z])(id|stat|err):(\S*)", re.IGNORECASE)
_RECEIPT_ID = re.compile(r"[!-~]{1,65}")
_RECEIPT_ERR = re.compile(r"[0-9A-Za-z]{1,8}")
_DECIMAL_ID = re.compile(r"[0-9]{1,65}")
"""ASCII digits only: ``str.isdigit`` also takes ``²``, which ``int`` refuses."""
_RECEIPT_TEXT_START = re.compile(r"(?<![A-Za-z])text:", re.IGNORECASE)
_STAT_ALIASES = {"DELIVERED": "DELIVRD", "UNDELIVERABLE": "UNDELIV", "REJECTED": "REJECTD"}
_STATS: dict[str, ReceiptStatus | None] = {
    "DELIVRD": "delivered",
    "EXPIRED": "expired",
    "UNDELIV": "failed",
    "REJECTD": "failed",
    "DELETED": "failed",
    "UNKNOWN": "failed",
    "ACCEPTD": None,  # not final: more news may follow
    "ENROUTE": None,
}
_MESSAGE_STATES: dict[int, str] = {
    1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD",
    7: "UNKNOWN", 8: "REJECTD",
}  # fmt: skip


def parse_receipt_text(text: str) -> ReceiptText | None:
    """``id:… stat:… err:…`` from a receipt's text, or None if it is not one.

    The ``text:`` field quotes the original message, which may itself contain ``id:``, so
    only what comes before it is read.
    """
    head = _RECEIPT_TEXT_START.split(text, maxsplit=1)[0]
    found: dict[str, str] = {}
    for match in _RECEIPT_FIELD.finditer(head):
        found.setdefault(match.group(1).lower(), match.group(2))
    ident = found.get("id", "")
    stat = found.get("stat", "").upper()
    stat = _STAT_ALIASES.get(stat, stat)
    if not _RECEIPT_ID.fullmatch(ident) or stat not in _STATS:
        return None
    err = found.get("err")
    return ReceiptText(ident, stat, err if err and _RECEIPT_ERR.fullmatch(err) else None)


def decode_short_message(data: bytes, data_coding: int, esm_class: int = 0, gsm7: int = 0) -> str:
    """The text of an inbound ``short_message``: UDH dropped, decoded per ``data_coding``.

    ``gsm7`` is the SMSC's code for the GSM default alphabet (unpacked, one septet an octet).
    Undecodable input gives U+FFFD characters, never an exception.
    """
    if esm_class & ESM_UDHI and data:
        data = data[1 + data[0] :]
    if data_coding in (0, gsm7):
        return _decode_gsm7(data)
    if data_coding == 8:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == 1:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")  # 3 is Latin-1; others are a best effort


def _decode_gsm7(septets: bytes) -> str:
    out, escape = [], False
    for septet in septets:
        if escape:
            out.append(EXT_DECODE.get(septet, " "))  # TS 23.038: unknown extension → space
            escape = False
        elif septet == ESC:
            escape = True
        else:
            out.append(GSM_DECODE.get(septet, "\ufffd"))
    return "".join(out)


def e164_sender(address: str, ton: int) -> str:
    """An inbound sender as E.164 with ``+`` when it is a number; alphanumeric ones as given."""
    address = address.strip()
    digits = address.removeprefix("+")
    if not digits.isdigit() or not digits.isascii():
        return address
    if not address.startswith("+") and ton != 1 and digits.startswith("00"):
        digits = digits[2:]  # an international prefix left in an unknown-TON address
    return "+" + digits


def receipt_from_fields(
    short_message: bytes, receipted_id: str | None, message_state: int | None, *, decimal: bool
) -> Receipt | None:
    """A final ``Receipt`` from a receipt deliver_sm's fields, or None (not final, garbage)."""
    parsed = parse_receipt_text(short_message.decode("latin-1"))
    ident = receipted_id or (parsed.id if parsed else "")
    stat = parsed.stat if parsed else _MESSAGE_STATES.get(message_state or 0, "")
    status = _STATS.get(stat)
    if not ident or status is None:
        return None
    if decimal and _DECIMAL_ID.fullmatch(ident.strip()):
        ident = format(int(ident.strip()), "x")
    detail = f"{stat} err:{parsed.err}" if parsed and parsed.err else stat
    error = None if status == "delivered" else detail
    return Receipt(normalize_provider_id(ident), status, error)


MIN_PDU_LENGTH = 16
"""The header alone (SMPP 3.4 §3.2)."""
MAX_PDU_LENGTH = 64 * 1024
"""The longest PDU we read. SMPP PDUs are small: a short_message is at most 254 octets, and a
message_payload TLV holding a whole 255-part message is under 36 KiB. A longer
``command_length`` is garbage or hostile: smpplib would buffer up to 4 GiB to read it."""


def command_length_problem(length: int) -> str | None:
    """Why a PDU's ``command_length`` is not one we will read, or None if it is."""
    if MIN_PDU_LENGTH <= length <= MAX_PDU_LENGTH:
        return None
    return f"command_length {length} is not {MIN_PDU_LENGTH} to {MAX_PDU_LENGTH}"


def status_name(status: int) -> str:
    """``ESME_RTHROTTLED (0x00000058)``: a status as a person can look it up."""
    return f"{_STATUS_NAMES.get(status, 'unknown status')} (0x{status:08X})"


def submit_result(message_id: int, status: int, provider_id: str, retry_delay: float) -> SendResult:
    """What a ``submit_sm_resp`` (or a ``generic_nack``) status means for one message."""
    if status == ROK:  # an empty id still means the SMSC took it: never send it twice
        provider = normalize_provider_id(provider_id) if provider_id.strip() else None
        return SendResult(message_id, "accepted", provider)
    if status in RETRY_STATUSES:
        return SendResult(message_id, "retry", error=status_name(status), retry_after=retry_delay)
    return SendResult(message_id, "failed", error=status_name(status))


class TokenBucket:
    """A token bucket of ``rate`` tokens a second holding at most ``burst``; sans-IO.

    The burst (20 ms worth, at least one) absorbs the thread waking late, so the rate holds
    over time instead of drifting below the limit.
    """

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate / 50)
        self._tokens = self.burst
        self._at = now

    def delay(self, now: float) -> float:
        """Seconds until one token is available (0: take it now)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def take(self, now: float) -> None:
        if self.rate > 0:
            self._refill(now)
            self._tokens -= 1.0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


SUBMIT_SM = 0x00000004
_HEADER = struct.Struct(">IIII")
_MAX_ADDRESS = 20
"""Characters of source_addr and destination_addr (21 octets with the NUL, SMPP 3.4 §4.4.1)."""


@dataclass(frozen=True)
class SubmitSm:
    """The submit_sm fields we set (SMPP 3.4 §4.4.1); the others go out empty or zero."""

    destination_addr: str = field(repr=False)
    """Digits only: the phone number, never logged."""
    short_message: bytes
    """UDH (if any) and body, 1 to 254 octets."""
    esm_class: int = 0
    data_coding: int = 0
    source_addr: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    registered_delivery: int = 1

    def __post_init__(self) -> None:
        # Raised for our own bugs only: the backend checks numbers and lengths first.
        if not (self.destination_addr.isascii() and len(self.destination_addr) <= _MAX_ADDRESS):
            raise ValueError("submit_sm destination_addr must be at most 20 ASCII characters")
        if not (self.source_addr.isascii() and len(self.source_addr) <= _MAX_ADDRESS):
            raise ValueError("submit_sm source_addr must be at most 20 ASCII characters")
        if not 0 < len(self.short_message) <= 254:
            raise ValueError("submit_sm short_message must be 1 to 254 octets")

    def encode(self, sequence: int) -> bytes:
        """The whole PDU, header included, with ``sequence`` as its sequence_number."""
        body = b"".join((
            b"\0",  # service_type: the SMSC's default
            bytes((self.source_addr_ton, self.source_addr_npi)),
            self.source_addr.encode("ascii"), b"\0",
            bytes((self.dest_addr_ton, self.dest_addr_npi)),
            self.destination_addr.encode("ascii"), b"\0",
            bytes((self.esm_class, 0, 0)),  # protocol_id, priority_flag
            b"\0\0",  # schedule_delivery_time and validity_period: now, the SMSC's default
            bytes((self.registered_delivery, 0, self.data_coding, 0, len(self.short_message))),
            self.short_message,
        ))  # fmt: skip
        return _HEADER.pack(16 + len(body), SUBMIT_SM, 0, sequence) + body


class SmppError(SmsError):
    """The SMSC cannot be reached, or refused our bind (wrong password or system_id)."""


@dataclass(frozen=True)
class SmppSettings:
    """How to reach and use one SMSC (the ``[smpp]`` config section)."""

    host: str
    port: int
    system_id: str
    password: str = field(repr=False)
    system_type: str = ""
    window: int = 10
    """Submits awaiting ``submit_sm_resp`` at most."""
    throughput: float = 0.0
    """Submits per second; 0 means unlimited."""
    enquire_link: float = 30.0
    """Seconds of silence from the SMSC before we send enquire_link."""
    timeout: float = 10.0
    """Seconds to connect and bind, and to wait for any response before dropping the link."""
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    retry_delay: float = 5.0
    """``retry_after`` for ESME_RTHROTTLED and ESME_RMSGQFUL."""
    stop_grace: float = 5.0
    """Seconds ``stop`` waits for in-flight responses before unbinding."""
    data_coding_gsm7: int = 0
    """What GSM-7 is called on this SMSC: 0 (the default alphabet) on most, 1 on some."""
    source_addr: str = ""
    source_addr_ton: int = 5
    """5 = alphanumeric sender; 1 = international number."""
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    receipt_ids_decimal: bool = False
    """The SMSC gives hex ids in submit_sm_resp but decimal ones in receipts: convert them."""

    def __post_init__(self) -> None:
        # smpplib silently truncates these C-octet strings (SMPP 3.4 §4.1.1): refuse instead.
        if not 0 < len(self.system_id) <= 15:
            raise SmppError(f"smpp system_id {self.system_id!r} must be 1 to 15 characters")
        if len(self.password) > 8:
            raise SmppError("smpp password is longer than SMPP 3.4 allows (8 characters)")
        if len(self.source_addr) > 20 or not self.source_addr.isascii():
            raise SmppError(
                f"smpp source_addr {self.source_addr!r} must be 0 to 20 ASCII characters"
            )
        octets = (self.source_addr_ton, self.source_addr_npi, self.dest_addr_ton,
                  self.dest_addr_npi, self.data_coding_gsm7)  # fmt: skip
        if not all(0 <= value <= 255 for value in octets):
            raise SmppError("smpp TON, NPI and data_coding values must each fit in one octet")
        if self.window < 1 or self.throughput < 0 or self.reconnect_min <= 0:
            raise SmppError("smpp window must be >= 1, throughput >= 0, reconnect_min > 0")


def bind_error(s: SmppSettings, exc: Exception) -> SmppError:
    """Why the SMSC refused our bind, from smpplib's ``PDUError`` (status in ``args[1]``)."""
    status = exc.args[1] if len(exc.args) > 1 else -1
    where = f"the SMSC at {s.host}:{s.port} refused to bind system_id {s.system_id!r}"
    if status == RINVPASWD:
        return SmppError(f"{where}: wrong password ({status_name(status)}); check smpp.password")
    if status == RINVSYSID:
        return SmppError(f"{where}: unknown system_id ({status_name(status)})")
    return SmppError(f"{where}: {status_name(status) if status >= 0 else exc}")


def submit_sm_for(sms: OutgoingSms, s: SmppSettings) -> SubmitSm | str:
    """The submit_sm for one message, or why it cannot be sent (never the number)."""
    number = sms.to.removeprefix("+")
    if not (number.isascii() and number.isdigit() and 0 < len(number) <= 20):
        return "the destination is not an E.164 number"
    if not 0 < len(sms.short_message) <= 254 or not 0 <= sms.esm_class <= 255:
        return f"short_message of {len(sms.short_message)} octets is not a single SMS"
    data_coding = s.data_coding_gsm7 if sms.data_coding == 0 else sms.data_coding
    return SubmitSm(
        number, sms.short_message, sms.esm_class, data_coding & 0xFF, s.source_addr,
        s.source_addr_ton, s.source_addr_npi, s.dest_addr_ton, s.dest_addr_npi,
    )  # fmt: skip
