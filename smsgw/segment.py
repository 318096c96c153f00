"""SMS encoding and segmentation: GSM-7 (with its extension table) or UCS-2, sans-IO.

Theory of operation
-------------------
3GPP TS 23.038 defines the GSM 7-bit default alphabet: 128 characters, plus an extension table
reached through the escape septet 0x1B, whose characters (``^ { } \\ [ ~ ] |``, ``€``, form
feed) cost two septets. Text with any other character must go as UCS-2 (UTF-16 code units;
characters outside the BMP take two units). Every Kazakh and Russian letter forces UCS-2.

One message holds 160 septets or 70 units. Longer text is split into parts that carry a 6-byte
concatenation header (UDH ``05 00 03 ref total seq``, SMPP ``esm_class`` 0x40), leaving 153
septets or 67 units per part. A part boundary never falls between an escape and its
character, nor inside a surrogate pair: either would corrupt the character, and in a proxy
link, the link. smpplib's own splitter does both, so we use this one.

Bodies are returned the way SMPP carries them: GSM-7 unpacked (one octet per septet; the SMSC
packs it for the air) and UCS-2 as UTF-16-BE. ``air_octets`` gives the packed size on the air,
which never exceeds 140 octets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from smsgw.errors import EncodingError

_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D,
              "]": 0x3E, "|": 0x40, "€": 0x65}  # fmt: skip
ESC = 0x1B
GSM_BASIC = {ch: i for i, ch in enumerate(_BASIC) if i != ESC}
GSM_DECODE = {i: ch for ch, i in GSM_BASIC.items()}
EXT_DECODE = {v: k for k, v in _EXTENSION.items()}

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
MAX_PARTS = 255
DATA_CODING = {"gsm7": 0x00, "ucs2": 0x08}
ESM_CLASS_UDHI = 0x40

Encoding = Literal["gsm7", "ucs2"]


@dataclass(frozen=True)
class Part:
    """One SMS as SMPP sends it."""

    udh: bytes
    """The concatenation header, or empty for a single-part message."""
    body: bytes
    """The encoded text: unpacked septets (GSM-7) or UTF-16-BE (UCS-2), without the UDH."""
    text: str
    encoding: Encoding

    @property
    def short_message(self) -> bytes:
        return self.udh + self.body

    @property
    def esm_class(self) -> int:
        return ESM_CLASS_UDHI if self.udh else 0

    @property
    def units(self) -> int:
        """Septets (GSM-7) or UTF-16 code units (UCS-2)."""
        return len(self.body) if self.encoding == "gsm7" else len(self.body) // 2

    @property
    def air_octets(self) -> int:
        """The user data size on the air, UDH included: what must stay within 140 octets."""
        if self.encoding == "ucs2":
            return len(self.udh) + len(self.body)
        bits = len(self.udh) * 8
        fill = (7 - bits % 7) % 7  # septets start on a septet boundary after the UDH
        return (bits + fill + 7 * len(self.body) + 7) // 8


@dataclass(frozen=True)
class Segmentation:
    """What ``segment`` found: the encoding, the parts, and why it is not GSM-7."""

    encoding: Encoding
    parts: tuple[Part, ...]
    units: int
    """Septets or code units of the whole text."""
    forcing: tuple[str, ...]
    """The characters (first seen first) that forced UCS-2; empty for GSM-7."""

    @property
    def count(self) -> int:
        return len(self.parts)

    @property
    def data_coding(self) -> int:
        return DATA_CODING[self.encoding]


def gsm7_septets(text: str) -> list[bytes] | None:
    """Each character's septets (one or two), or None if the text is not all GSM-7."""
    out = []
    for ch in text:
        code = GSM_BASIC.get(ch)
        if code is not None:
            out.append(bytes((code,)))
        elif ch in _EXTENSION:
            out.append(bytes((ESC, _EXTENSION[ch])))
        else:
            return None
    return out


def non_gsm7(text: str) -> tuple[str, ...]:
    """The characters of ``text`` that GSM-7 cannot carry, each once, in order."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM_BASIC and ch not in _EXTENSION:
            seen.setdefault(ch, None)
    return tuple(seen)


def segment(
    text: str, *, reference: int | None = None, force: Encoding | None = None
) -> Segmentation:
    """Encode ``text`` and split it into parts.

    ``reference`` is the 8-bit concatenation reference (random by default); ``force="ucs2"``
    sends GSM-7-able text as UCS-2 anyway, and ``force="gsm7"`` refuses text that is not.
    """
    if not text:
        raise EncodingError("an SMS needs some text")
    septets = gsm7_septets(text) if force != "ucs2" else None
    if septets is None:
        if force == "gsm7":
            shown = "".join(non_gsm7(text))[:20]
            raise EncodingError(f"these characters need UCS-2, not GSM-7: {shown!r}")
        return _ucs2(text, reference)
    return _gsm7(text, septets, reference)


def _chunks(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """Greedy split of items (each of ``sizes[i]`` units) into runs of at most ``limit`` units,
    never splitting an item: returns (start, end) item index pairs."""
    runs, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if used + size > limit:
            runs.append((start, i))
            start, used = i, 0
        used += size
    runs.append((start, len(sizes)))
    return runs


def _udh(reference: int, total: int, seq: int) -> bytes:
    return bytes((0x05, 0x00, 0x03, reference, total, seq))


def concatenation(short_message: bytes, esm_class: int) -> tuple[int, int, int] | None:
    """``(reference, total, seq)`` when this part belongs to a concatenated SMS (a UDH with
    information element 0x00, 8-bit reference, or 0x08, 16-bit), as a phone reads it.

    None for a message that stands alone, and for a UDH that is malformed or whose numbers
    make no sense (total under 2, seq outside 1..total): a phone shows such a part as it is.
    """
    if not esm_class & ESM_CLASS_UDHI or not short_message:
        return None
    end = 1 + short_message[0]
    if end > len(short_message):
        return None
    at = 1
    while at + 2 <= end:
        tag, size = short_message[at], short_message[at + 1]
        value = short_message[at + 2 : at + 2 + size]
        if at + 2 + size > end:
            return None
        if (tag, size) in ((0x00, 3), (0x08, 4)):
            reference = int.from_bytes(value[:-2], "big")
            total, seq = value[-2], value[-1]
            return (reference, total, seq) if total >= 2 and 1 <= seq <= total else None
        at += 2 + size
    return None


def _assemble(
    text: str, items: list[bytes], sizes: list[int], single: int, per_part: int,
    encoding: Encoding, reference: int | None,
) -> Segmentation:  # fmt: skip
    total_units = sum(sizes)
    chars = list(text)  # items are whole characters, in the same order
    runs = [(0, len(items))] if total_units <= single else _chunks(sizes, per_part)
    if len(runs) > MAX_PARTS:
        raise EncodingError(f"text needs {len(runs)} parts; an SMS has at most {MAX_PARTS}")
    ref = os.urandom(1)[0] if reference is None else reference & 0xFF
    parts = []
    for seq, (a, b) in enumerate(runs, start=1):
        udh = _udh(ref, len(runs), seq) if len(runs) > 1 else b""
        parts.append(Part(udh, b"".join(items[a:b]), "".join(chars[a:b]), encoding))
    forcing = non_gsm7(text) if encoding == "ucs2" else ()
    return Segmentation(encoding, tuple(parts), total_units, forcing)


def _gsm7(text: str, septets: list[bytes], reference: int | None) -> Segmentation:
    sizes = [len(s) for s in septets]
    return _assemble(text, septets, sizes, GSM7_SINGLE, GSM7_PART, "gsm7", reference)


def _ucs2(text: str, reference: int | None) -> Segmentation:
    try:  # one item per character, so a surrogate pair is never split
        units = [ch.encode("utf-16-be") for ch in text]
    except UnicodeEncodeError:
        raise EncodingError("the text has a broken character (an unpaired surrogate)") from None
    sizes = [len(u) // 2 for u in units]
    return _assemble(text, units, sizes, UCS2_SINGLE, UCS2_PART, "ucs2", reference)


def decode(part: Part) -> str:
    """The text a phone shows for one part (for tests and the outbox)."""
    if part.encoding == "ucs2":
        return part.body.decode("utf-16-be")
    out, escape = [], False
    for septet in part.body:
        if escape:
            out.append(EXT_DECODE.get(septet, " "))
            escape = False
        elif septet == ESC:
            escape = True
        else:
            out.append(GSM_DECODE[septet])
    return "".join(out)
