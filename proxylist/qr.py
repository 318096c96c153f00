"""QR codes for signed links: a fast byte-mode encoder on the ``qrcode`` library's tables, and
PNG, SVG and terminal renderings (DESIGN.md §6 "QR").

Theory of operation
-------------------
:func:`encode` turns a text into a :class:`QrCode`, the module matrix as rows of ``"0"``/``"1"``
(``"1"`` is dark), without the quiet zone. The renderers add the quiet zone: four modules, as
ISO/IEC 18004 asks; scanners find the finder patterns much less reliably with less.

Error-correction level: **M** by default. A signed link is about 230 ASCII characters (the
``tg://`` form with an ``ee`` secret, ``kid``, ``exp`` and an 86-character ``sig``), always in
byte mode, so the level decides the version and so the module count across the same printed
width (quiet zone included):

====== ============ ====================== ========================
level  recovers     version, modules wide  module at 30 mm width
====== ============ ====================== ========================
L      ~7 %         9, 53 + 8 = 61         0.49 mm
M      ~15 %        11, 61 + 8 = 69        0.43 mm
Q      ~25 %        13, 69 + 8 = 77        0.39 mm
H      ~30 %        16, 81 + 8 = 89        0.34 mm
====== ============ ====================== ========================

Phone cameras resolve modules down to about 0.3-0.4 mm at reading distance, so Q and H push a
small print to that limit while L leaves nothing for a poster that is folded, smudged, taped
over or photographed at an angle. M costs two versions (8 modules, about 12 % smaller modules)
over L and doubles what the code survives, so M is the default; L is there for tiny prints on
clean paper and Q for large prints in rough places.

Speed: a campaign renders a code per recipient, so PNG rendering targets 300 codes per second on
one core. The ``qrcode`` library is pure Python and spends about 15 ms per such code (its
Reed-Solomon polynomials and eight full matrix builds to pick a mask), so this module keeps the
library for what is easy to get wrong (the block table, the alignment positions, the function
patterns and format and version bits, drawn by its own methods once per version) and does the
per-code work itself: Reed-Solomon with a table-driven shift register on Python integers,
module placement by one precomputed index list, and the mask penalty (the library's rules,
exactly) as bit operations on one integer holding every row and column. The tests check every
matrix against ``qrcode``'s own for the same text and level.

PNG is written directly, with no imaging library: 1-bit greyscale, each module row's first
pixel row unfiltered and its repeats filtered "Up" (all zeros), one zlib stream. Everything
here is sans-IO: text in, bytes or text out.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

import qrcode
import qrcode.base
import qrcode.util

from proxylist.errors import QrError

Level = Literal["L", "M", "Q", "H"]
LEVELS: dict[Level, int] = {
    "L": qrcode.constants.ERROR_CORRECT_L,
    "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q,
    "H": qrcode.constants.ERROR_CORRECT_H,
}
QUIET_ZONE = 4
"""Light modules around the code on every side (ISO/IEC 18004 §6.3.8)."""
_DARK_RUNS = re.compile(r"1+")


@dataclass(frozen=True)
class QrCode:
    """One QR code: the text it holds and its module matrix (no quiet zone)."""

    text: str
    level: Level
    version: int
    mask: int
    rows: tuple[str, ...]
    """Row ``y`` as a string of ``"0"`` (light) and ``"1"`` (dark), column 0 first."""

    @property
    def size(self) -> int:
        """Modules per side, without the quiet zone."""
        return len(self.rows)

    def matrix(self, border: int = QUIET_ZONE) -> list[str]:
        """The rows with ``border`` light modules added on every side."""
        side = "0" * border
        blank = "0" * (self.size + 2 * border)
        return [blank] * border + [side + r + side for r in self.rows] + [blank] * border


# -- layout: drawn once per version by qrcode's own methods ------------------------------------


@dataclass(frozen=True)
class _Layout:
    """One version's geometry as big integers: every row, then every column, in a slot of
    ``size + 1`` bits (the spare bit keeps runs and patterns from crossing lines). Bit strings
    read left to right: character ``j`` of ``format(x, f"0{bits}b")`` is slot ``j // width``,
    position ``j % width``."""

    size: int
    cells: int
    """How many modules carry data (codewords plus remainder bits)."""
    pick: Callable[[str], tuple[str, ...]]
    """Picks every slot position's bit from the data bit stream (non-data reads a final 0)."""
    blank: int
    """Function patterns with format and version areas light: what the mask penalty sees."""
    masks: tuple[int, ...]
    """Per mask pattern, the bits it flips (data cells only)."""
    inside: int
    """1 on every real module, 0 on the spare bits."""
    rows_inside: int
    """``inside`` on the row slots only."""

    @property
    def width(self) -> int:
        return self.size + 1

    @property
    def bits(self) -> int:
        return 2 * self.size * self.width


def _function_modules(version: int, level: int, mask: int | None) -> list[list[bool | None]]:
    """qrcode's matrix before data placement; ``mask=None`` leaves format and version light."""
    code = qrcode.QRCode(version=version, error_correction=level, border=0)
    n = code.modules_count = version * 4 + 17
    code.modules = [[None] * n for _ in range(n)]
    code.setup_position_probe_pattern(0, 0)
    code.setup_position_probe_pattern(n - 7, 0)
    code.setup_position_probe_pattern(0, n - 7)
    code.setup_position_adjust_pattern()
    code.setup_timing_pattern()
    code.setup_type_info(mask is None, mask or 0)
    if version >= 7:
        code.setup_type_number(mask is None)
    modules: list[list[bool | None]] = code.modules
    return modules


def _placement(modules: list[list[bool | None]]) -> list[tuple[int, int]]:
    """Data cells in bit-stream order: two-column zigzag from the bottom right (§7.7.3)."""
    n = len(modules)
    order, row, step = [], n - 1, -1
    for right in range(n - 1, 0, -2):
        right = right - 1 if right <= 6 else right  # skip the vertical timing pattern
        while 0 <= row < n:
            order += [(row, c) for c in (right, right - 1) if modules[row][c] is None]
            row += step
        row, step = row - step, -step
    return order


def _slots(grid: Sequence[Sequence[object]], spare: object) -> list[object]:
    """Rows then columns of a square grid, each followed by one ``spare``."""
    lines = [*map(list, grid), *map(list, zip(*grid, strict=True))]
    return [item for line in lines for item in (*line, spare)]


def _int(flags: Sequence[object]) -> int:
    return int("".join("1" if f else "0" for f in flags), 2)


@cache
def _layout(version: int) -> _Layout:
    modules = _function_modules(version, LEVELS["M"], None)
    n, order = len(modules), _placement(modules)
    index = [[len(order)] * n for _ in range(n)]
    for i, (r, c) in enumerate(order):
        index[r][c] = i
    data = [[i < len(order) for i in line] for line in index]
    funcs = [qrcode.util.mask_func(k) for k in range(8)]
    masks = [[[data[r][c] and f(r, c) for c in range(n)] for r in range(n)] for f in funcs]
    real = [[True] * n for _ in range(n)]
    rows_only = _slots(real, False)[: n * (n + 1)]
    return _Layout(
        size=n,
        cells=len(order),
        pick=itemgetter(*_slots(index, len(order))),
        blank=_int(_slots(modules, False)),
        masks=tuple(_int(_slots(m, False)) for m in masks),
        inside=_int(_slots(real, False)),
        rows_inside=_int(rows_only + [False] * n * (n + 1)),
    )


@cache
def _final(version: int, level: int, mask: int) -> int:
    """Function patterns with the real format and version bits and the dark module."""
    return _int(_slots(_function_modules(version, level, mask), False))


# -- data codewords: byte mode, Reed-Solomon, interleaving --------------------------------------


def _version_for(length: int, level: int) -> int:
    for version in range(1, 41):
        count_bits = 8 if version < 10 else 16
        if 4 + count_bits + 8 * length <= qrcode.util.BIT_LIMIT_TABLE[level][version]:
            return version
    raise QrError(
        f"the text is {length} bytes, more than a QR code holds at this error-correction level; "
        "shorten it or choose level L"
    )


def _data_codewords(data: bytes, version: int, level: int) -> bytes:
    limit: int = qrcode.util.BIT_LIMIT_TABLE[level][version]
    count_bits = 8 if version < 10 else 16
    bits = f"0100{len(data):0{count_bits}b}" + (
        f"{int.from_bytes(data):0{8 * len(data)}b}" if data else ""
    )
    bits += "0" * min(4, limit - len(bits))
    bits += "0" * (-len(bits) % 8)
    pad = (limit - len(bits)) // 8
    return int(bits, 2).to_bytes(len(bits) // 8) + (b"\xec\x11" * pad)[:pad]


@cache
def _rs_table(ec_count: int) -> tuple[int, ...]:
    """For each leading byte, its multiple of the generator's lower coefficients, as an int."""
    generator = [1]
    for i in range(ec_count):
        root = qrcode.base.gexp(i)
        generator = [
            a ^ (_gf_mul(b, root) if b is not None else 0)
            for a, b in zip([*generator, 0], [None, *generator], strict=True)
        ]
    tail = generator[1:]
    return tuple(int.from_bytes(bytes(_gf_mul(f, g) for g in tail)) for f in range(256))


def _gf_mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return int(qrcode.base.gexp(qrcode.base.glog(a) + qrcode.base.glog(b)))


def _rs_remainder(block: bytes, ec_count: int) -> bytes:
    table, shift, keep = _rs_table(ec_count), 8 * (ec_count - 1), (1 << 8 * ec_count) - 1
    rem = 0
    for byte in block:
        rem = ((rem << 8) & keep) ^ table[byte ^ (rem >> shift)]
    return rem.to_bytes(ec_count)


def _codewords(data: bytes, version: int, level: int) -> bytes:
    """Data and error-correction codewords, interleaved across blocks (§7.6)."""
    stream = _data_codewords(data, version, level)
    blocks, ecs, offset = [], [], 0
    for block in qrcode.base.rs_blocks(version, level):
        chunk = stream[offset : offset + block.data_count]
        offset += block.data_count
        blocks.append(chunk)
        ecs.append(_rs_remainder(chunk, block.total_count - block.data_count))
    return _interleave(blocks) + _interleave(ecs)


def _interleave(blocks: Sequence[bytes]) -> bytes:
    longest = max(len(b) for b in blocks)
    return bytes(b[i] for i in range(longest) for b in blocks if i < len(b))


# -- the mask: the qrcode library's penalty, on all rows and columns at once ---------------------

_FINDER_LIKE = ("10111010000", "00001011101")


def _penalty(x: int, layout: _Layout) -> int:
    """qrcode's ``lost_point``: long runs, 2x2 blocks, finder look-alikes, dark balance.

    A shift right by ``k`` lines every character up with the one ``k`` before it, so one
    expression tests a condition at every module of every row and column.
    """
    inside, width, n = layout.inside, layout.width, layout.size
    equal = ~(x ^ (x >> 1))  # each module equals the one before it
    run5 = equal & (equal >> 1) & (equal >> 2) & (equal >> 3) & inside
    for k in range(1, 5):
        run5 &= inside >> k
    # A run of L >= 5 holds L - 4 windows of five and scores L - 2: two more per run.
    points = run5.bit_count() + 2 * (run5 & ~(run5 << 1)).bit_count()
    rows = layout.rows_inside
    block = rows & (rows >> 1) & (rows >> width) & (rows >> (width + 1))
    vertical = ~(x ^ (x >> width))
    points += 3 * (equal & vertical & (vertical >> 1) & block).bit_count()
    for pattern in _FINDER_LIKE:
        hit = inside
        for k, bit in enumerate(reversed(pattern)):
            hit &= (x >> k) if bit == "1" else ~(x >> k)
            hit &= inside >> k
        points += 40 * hit.bit_count()
    dark = (x & rows).bit_count()
    return points + int(abs(dark / n**2 * 100 - 50) / 5) * 10


def encode(text: str, level: Level = "M", mask: int | None = None) -> QrCode:
    """The QR code for ``text`` (UTF-8, byte mode) at ``level``; the best mask unless given."""
    if level not in LEVELS:
        raise QrError(f"unknown error-correction level {level!r}; use L, M, Q or H")
    if mask is not None and mask not in range(8):
        raise QrError(f"mask pattern must be 0-7, got {mask!r}")
    data, ec = text.encode("utf-8"), LEVELS[level]
    version = _version_for(len(data), ec)
    layout = _layout(version)
    words = _codewords(data, version, ec)
    stream = f"{int.from_bytes(words):0{8 * len(words)}b}".ljust(layout.cells + 1, "0")
    placed = int("".join(layout.pick(stream)), 2)
    if mask is None:
        mask = min(
            range(8), key=lambda k: _penalty(layout.blank | (placed ^ layout.masks[k]), layout)
        )
    final = format(_final(version, ec, mask) | (placed ^ layout.masks[mask]), f"0{layout.bits}b")
    n, width = layout.size, layout.width
    return QrCode(
        text, level, version, mask, tuple(final[y * width : y * width + n] for y in range(n))
    )


# -- renderings ---------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(code: QrCode, scale: int = 8, border: int = QUIET_ZONE) -> bytes:
    """A 1-bit greyscale PNG, ``scale`` pixels per module, ``border`` modules of quiet zone."""
    if not 1 <= scale <= 64 or not 0 <= border <= 64:
        raise QrError(f"PNG scale must be 1-64 and the border 0-64, got {scale} and {border}")
    width = (code.size + 2 * border) * scale
    light, dark = "1" * scale, "0" * scale  # in greyscale 0 is black
    widen = str.maketrans({"0": light, "1": dark})
    quiet, pad = light * border, "1" * (-width % 8)
    stride = (width + 7) // 8
    same = b"\x02" + bytes(stride)  # filter "Up" on a repeated line: all zero, cheap to pack
    margin = (b"\x00" + b"\xff" * stride + same * (border * scale - 1)) if border else b""
    lines = [margin]
    for row in code.rows:
        bits = quiet + row.translate(widen) + quiet + pad
        lines.append(b"\x00" + int(bits, 2).to_bytes(stride) + same * (scale - 1))
    lines.append(margin)
    header = struct.pack(">IIBBBBB", width, width, 1, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(lines), 1)),
            _chunk(b"IEND", b""),
        )
    )


def svg(code: QrCode, border: int = QUIET_ZONE, label: str | None = None, width: str = "") -> str:
    """An SVG image: one path of dark modules on a white square, sized by ``width`` (CSS).

    ``label`` becomes the accessible name (``role="img"`` with ``aria-label`` and a
    ``<title>``); without it the image is hidden from screen readers as decoration.
    """
    side = code.size + 2 * border
    path = "".join(
        f"M{m.start() + border},{y + border}h{m.end() - m.start()}v1h-{m.end() - m.start()}z"
        for y, row in enumerate(code.rows)
        for m in _DARK_RUNS.finditer(row)
    )
    size = f" width={quoteattr(width)} height={quoteattr(width)}" if width else ""
    if label is None:
        a11y, title = ' aria-hidden="true"', ""
    else:
        a11y, title = (
            f' role="img" aria-label={quoteattr(label)}',
            f"<title>{escape(label)}</title>",
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}"{size}{a11y} '
        f'shape-rendering="crispEdges">{title}<rect width="{side}" height="{side}" fill="#fff"/>'
        f'<path fill="#000" d="{path}"/></svg>'
    )


_HALVES = {
    # (top dark, bottom dark) -> character, drawing dark modules (for light terminals)
    (False, False): " ",
    (True, False): "\u2580",
    (False, True): "\u2584",
    (True, True): "\u2588",
}


def terminal(code: QrCode, border: int = QUIET_ZONE, invert: bool = True) -> str:
    """The code in Unicode half blocks, two module rows per line.

    ``invert`` (the default) draws the light modules, which suits the usual light-on-dark
    terminal; without it the dark modules are drawn, for dark text on a light background.
    """
    rows = code.matrix(border)
    if len(rows) % 2:
        rows.append("0" * len(rows[0]))
    drawn = "0" if invert else "1"
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        lines.append(
            "".join(_HALVES[a == drawn, b == drawn] for a, b in zip(top, bottom, strict=True))
        )
    return "\n".join(lines) + "\n"
