"""QR codes: the same matrices as the qrcode library, and every rendering scans back (zbarimg,
and Chromium for SVG) to exactly the signed link, which then verifies."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import qrcode
from hypothesis import given, settings
from hypothesis import strategies as st

import signing
from proxylist import poster, qr
from proxylist.errors import QrError
from signing.minisign import SecretKey
from signing.trust import TrustRoot

NOW = 1_790_000_000.0  # 2026-09-21
SECRET = "ee0123456789abcdef0123456789abcdef" + b"example.com".hex()
URL = f"tg://proxy?server=relay.example.org&port=443&secret={SECRET}"


@pytest.fixture(scope="module")
def link(key: SecretKey) -> str:
    return signing.sign_link(URL, key, NOW + 72 * 3600).url("tg")


def zbar(image: Path) -> list[str]:
    """Every code zbarimg finds in the image, one per line of its --raw output."""
    done = subprocess.run(
        ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def library_rows(text: str, level: qr.Level) -> tuple[int, tuple[str, ...]]:
    """What the qrcode library itself makes of the text (byte mode, its own mask choice)."""
    code = qrcode.QRCode(error_correction=qr.LEVELS[level], border=0)
    code.add_data(qrcode.util.QRData(text.encode("utf-8"), mode=qrcode.util.MODE_8BIT_BYTE))
    code.make(fit=True)
    return code.version, tuple("".join("1" if m else "0" for m in row) for row in code.modules)


@settings(max_examples=40)
@given(text=st.text(max_size=400), level=st.sampled_from(["L", "M", "Q", "H"]))
def test_same_matrix_as_the_qrcode_library(text: str, level: qr.Level) -> None:
    code = qr.encode(text, level)
    assert (code.version, code.rows) == library_rows(text, level)


@pytest.mark.parametrize("length", [0, 17, 150, 230, 600, 1200])
def test_same_matrix_at_many_versions(length: int) -> None:
    text = ("tg://proxy?server=r.example&sig=aZ09-_" * 40)[:length]
    for level in ("L", "H"):
        code = qr.encode(text, level)  # type: ignore[arg-type]
        assert (code.version, code.rows) == library_rows(text, level)  # type: ignore[arg-type]


def test_every_forced_mask_matches_the_library(link: str) -> None:
    for mask in range(8):
        ours = qr.encode(link, "M", mask=mask)
        theirs = qrcode.QRCode(error_correction=qr.LEVELS["M"], border=0, mask_pattern=mask)
        theirs.add_data(qrcode.util.QRData(link.encode(), mode=qrcode.util.MODE_8BIT_BYTE))
        theirs.make(fit=True)
        assert ours.rows == tuple("".join("1" if m else "0" for m in r) for r in theirs.modules)


def test_a_signed_link_is_version_11_at_level_m(link: str) -> None:
    assert len(link) == 230
    code = qr.encode(link)
    assert (code.level, code.version, code.size) == ("M", 11, 61)


def png_pixels(data: bytes) -> tuple[int, list[str]]:
    """Decode our own PNG (1-bit greyscale, filters None and Up) into rows of 0/1 pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (1, 0) and width == height and b"IEND" in chunks
    raw, stride, rows, previous = zlib.decompress(chunks[b"IDAT"]), (width + 7) // 8, [], b""
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        body = (
            line[1:]
            if line[0] == 0
            else bytes(a ^ b for a, b in zip(line[1:], previous, strict=True))
        )
        assert line[0] in (0, 2)
        previous = body
        rows.append(format(int.from_bytes(body), f"0{stride * 8}b")[:width])
    return width, rows


@pytest.mark.parametrize(("scale", "border"), [(1, 4), (3, 0), (8, 4), (5, 2)])
def test_png_pixels_are_the_modules(link: str, scale: int, border: int) -> None:
    code = qr.encode(link)
    width, pixels = png_pixels(qr.png(code, scale=scale, border=border))
    assert width == (code.size + 2 * border) * scale
    for y, row in enumerate(code.matrix(border)):
        expected = "".join("0" * scale if m == "1" else "1" * scale for m in row)
        assert pixels[y * scale : (y + 1) * scale] == [expected] * scale


@pytest.mark.parametrize("level", ["L", "M", "Q", "H"])
def test_png_scans_back_to_the_link_which_verifies(
    tmp_path: Path, link: str, root: TrustRoot, level: qr.Level
) -> None:
    image = tmp_path / "code.png"
    image.write_bytes(qr.png(qr.encode(link, level), scale=4))
    assert zbar(image) == [link]
    assert signing.verify_link(zbar(image)[0], root, NOW).kid is not None


def test_tme_link_and_unicode_text_scan_back(tmp_path: Path, key: SecretKey) -> None:
    tme = signing.sign_link(URL, key, NOW + 3600).url("tme")
    for text in (tme, "Прокси: " + tme):
        image = tmp_path / "code.png"
        image.write_bytes(qr.png(qr.encode(text), scale=3))
        assert zbar(image) == [text]


def test_svg_rendered_by_chromium_scans_back(tmp_path: Path, link: str, root: TrustRoot) -> None:
    (tmp_path / "code.svg").write_text(qr.svg(qr.encode(link), label="QR code"), "utf-8")
    page = tmp_path / "page.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><body style="margin:20px;background:#fff">'
        '<img src="code.svg" width="480" height="480" alt="QR code"></body></html>'
    )
    shot = tmp_path / "shot.png"
    done = poster.run_chromium(page, f"--screenshot={shot}", "--window-size=560,560")
    assert done.returncode == 0 and poster.page_errors(done.stderr) == [], done.stderr[-2000:]
    assert zbar(shot) == [link]
    signing.verify_link(link, root, NOW)


def test_svg_is_accessible_or_hidden() -> None:
    code = qr.encode("hello")
    labelled = qr.svg(code, label='QR "code" <1>')
    assert 'role="img"' in labelled and '<title>QR "code" &lt;1&gt;</title>' in labelled
    assert "aria-label='QR \"code\" &lt;1&gt;'" in labelled
    assert 'aria-hidden="true"' in qr.svg(code)


HALF = {
    " ": (False, False),
    "\u2580": (True, False),
    "\u2584": (False, True),
    "\u2588": (True, True),
}


@pytest.mark.parametrize("invert", [True, False])
def test_terminal_drawing_is_the_matrix_and_scans(tmp_path: Path, link: str, invert: bool) -> None:
    code = qr.encode(link)
    lines = qr.terminal(code, invert=invert).splitlines()
    drawn = [[HALF[ch] for ch in line] for line in lines]
    rows = []
    for line in drawn:
        rows.append("".join("1" if top != invert else "0" for top, _ in line))
        rows.append("".join("1" if bottom != invert else "0" for _, bottom in line))
    matrix = code.matrix()
    assert rows[: len(matrix)] == matrix
    back = qr.QrCode(link, "M", code.version, code.mask, tuple(r[4:-4] for r in matrix[4:-4]))
    image = tmp_path / "terminal.png"
    image.write_bytes(qr.png(back, scale=3))
    assert zbar(image) == [link]


def test_errors_say_what_to_do() -> None:
    with pytest.raises(QrError, match="shorten it or choose level L"):
        qr.encode("x" * 3000)
    with pytest.raises(QrError, match="use L, M, Q or H"):
        qr.encode("x", "Z")  # type: ignore[arg-type]
    with pytest.raises(QrError, match="mask pattern"):
        qr.encode("x", mask=8)
    with pytest.raises(QrError, match="scale"):
        qr.png(qr.encode("x"), scale=0)


@settings(max_examples=60)
@given(text=st.text(max_size=3000))
def test_encode_never_crashes(text: str) -> None:
    try:
        code = qr.encode(text, "L")
    except QrError:
        assert len(text.encode("utf-8")) > 2900
        return
    assert code.size == 4 * code.version + 17
    assert all(len(row) == code.size and set(row) <= {"0", "1"} for row in code.rows)
