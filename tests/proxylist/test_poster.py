"""Posters: a self-contained, accessible A4 page that headless Chromium prints and screenshots
without errors, whose codes scan back to links that verify, in Kazakh, Russian and English."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

import signing
from proxylist import poster
from proxylist.errors import QrError
from signing.minisign import SecretKey
from signing.trust import TrustRoot

SECRET = "ee0123456789abcdef0123456789abcdef" + b"example.com".hex()


@pytest.fixture(scope="module")
def links(key: SecretKey) -> list[str]:
    expires = time.time() + 72 * 3600
    return [
        signing.sign_link(
            f"https://t.me/proxy?server=relay{i}.example.org&port=443&secret={SECRET}", key, expires
        ).url()
        for i in range(1, 5)
    ]


@pytest.fixture(scope="module")
def entries(links: list[str], root: TrustRoot) -> list[poster.PosterEntry]:
    return poster.verified_entries(links, root, time.time())


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, entries: list[poster.PosterEntry]) -> Path:
    path = tmp_path_factory.mktemp("poster") / "poster.html"
    path.write_text(poster.render_html(entries, "almaty-7"), "utf-8")
    return path


def zbar(image: Path) -> list[str]:
    done = subprocess.run(
        ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_entries_use_the_qr_scheme_and_carry_key_and_expiry(
    entries: list[poster.PosterEntry], key: SecretKey
) -> None:
    assert all(e.link.startswith("tg://proxy?server=relay") for e in entries)
    assert {e.key_id for e in entries} == {key.hex_id}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00 UTC", entries[0].expiry_text)


def test_a_link_that_does_not_verify_is_refused(links: list[str], root: TrustRoot) -> None:
    forged = links[1].replace("relay2", "evil2")
    with pytest.raises(QrError, match="link 2 does not verify .*bad-signature"):
        poster.verified_entries([links[0], forged], root, time.time())
    unsigned = f"tg://proxy?server=relay.example.org&port=443&secret={SECRET}"
    with pytest.raises(QrError, match="link 1 does not verify .*not signed"):
        poster.verified_entries([unsigned], root, time.time())
    with pytest.raises(QrError, match="at least one link"):
        poster.render_html([], "empty")


def test_signed_entries_verify(key: SecretKey, root: TrustRoot) -> None:
    url = f"tg://proxy?server=relay.example.org&port=8443&secret={SECRET}"
    (entry,) = poster.signed_entries([url], key, time.time() + 3600, scheme="tme")
    assert entry.link.startswith("https://t.me/proxy?")
    assert signing.verify_link(entry.link, root, time.time()).port == 8443
    with pytest.raises(QrError, match="link 1 cannot be signed"):
        poster.signed_entries(["tg://proxy?server=x"], key, time.time() + 3600)


def test_page_is_self_contained_and_accessible(
    page: Path, entries: list[poster.PosterEntry]
) -> None:
    html = page.read_text("utf-8")
    assert "@page { size: A4;" in html
    fetches = ("<script", "<link", "src=", "url(", "@import", "http://", "https://")
    plain = html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
    assert [f for f in fetches if f in plain] == []
    assert html.count("<h1>") == 1 and html.count("<h2 ") == len(entries)
    assert html.count('role="img" aria-label="QR code of Telegram proxy link') == len(entries)
    # one instruction per entry and the header's check, per language; the footer is English
    for lang, extra in (("kk", 1), ("ru", 1), ("en", 2)):
        assert html.count(f'<p lang="{lang}">') == len(entries) + extra
    assert "color: #000" in html and "background: #fff" in html


def test_chromium_prints_it_to_a_pdf(page: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "poster.pdf"
    poster.render_pdf(page, pdf)
    assert pdf.read_bytes().startswith(b"%PDF")


def test_chromium_screenshot_scans_back_to_links_that_verify(
    page: Path, tmp_path: Path, links: list[str], root: TrustRoot
) -> None:
    shot = tmp_path / "poster.png"
    done = poster.run_chromium(
        page,
        f"--screenshot={shot}",
        "--window-size=794,2400",
        "--force-device-scale-factor=2",
        "--hide-scrollbars",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert poster.page_errors(done.stderr) == []
    found = zbar(shot)
    assert sorted(found) == sorted(signing.parse_link(link).url("tg") for link in links)
    now = time.time()
    assert all(signing.verify_link(text, root, now) for text in found)


def test_the_dom_has_the_instructions_in_three_languages(page: Path) -> None:
    done = poster.run_chromium(page, "--dump-dom")
    assert done.returncode == 0 and poster.page_errors(done.stderr) == []
    dom = done.stdout
    assert "Телефонның камерасын QR-кодқа бағыттаңыз" in dom  # Kazakh
    assert "Наведите камеру телефона на QR-код" in dom  # Russian
    assert "Point your phone camera at the QR code" in dom  # English
    assert "Кілт нөмірін" in dom and "Сверьте номер ключа" in dom and "Compare the key" in dom


def test_a_page_error_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><script>console.error("boom")</script>')
    done = poster.run_chromium(broken, "--dump-dom")
    assert any("boom" in line for line in poster.page_errors(done.stderr))
    with pytest.raises(QrError, match="could not print .*boom"):
        poster.render_pdf(broken, tmp_path / "broken.pdf")


def test_missing_chromium_is_a_clear_error(page: Path, tmp_path: Path) -> None:
    with pytest.raises(QrError, match="Chromium is not installed.*apt-get install chromium"):
        poster.render_pdf(page, tmp_path / "x.pdf", chromium="no-such-chromium-kopir")
