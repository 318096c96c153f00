"""``kopir qr`` and ``kopir poster`` through the real command line: codes scan back to signed
links that verify, and bad input is one clear line with exit code 1 or 2, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kopir.cli import main
from tests.cli import kopir

SECRET = "ee0123456789abcdef0123456789abcdef" + b"example.com".hex()
URL = f"tg://proxy?server=relay.example.org&port=443&secret={SECRET}"
RELAY_KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's key and a trust root, laid out as a config's data dir."""
    home = tmp_path_factory.mktemp("qr")
    data = home / "data"
    assert kopir("keys", "generate", "--name", "alice", "--out", data / "keys").returncode == 0
    trust = kopir(
        "trust", "init", "--out", data / "trust.json", f"--key={data}/keys/alice.pub",
        "--sign", data / "keys/alice.key",
    )  # fmt: skip
    assert trust.returncode == 0, trust.stderr
    (home / "config.toml").write_text(
        '[signing]\nkey = "keys/alice.key"\ntrust = "trust.json"\nlink_expiry = "24h"\n'
        f'[relay]\nlisten = ["127.0.0.1:8443"]\n'
        f'[[relay.secrets]]\nname = "a"\nsecret = "{RELAY_KEY}"\n'
    )
    return home


@pytest.fixture(scope="module")
def link(ops: Path) -> str:
    signed = kopir("sign", "link", URL, "--key", ops / "data/keys/alice.key", "--scheme", "tg")
    assert signed.returncode == 0, signed.stderr
    return signed.stdout.strip()


def zbar(image: Path) -> list[str]:
    done = subprocess.run(
        ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_qr_png_scans_back_to_the_link_which_verifies(ops: Path, link: str, tmp_path: Path) -> None:
    png = tmp_path / "link.png"
    made = kopir("qr", link, "--png", png, "--trust", ops / "data/trust.json")
    assert made.returncode == 0, made.stderr
    assert "valid: signed by alice" in made.stderr and "QR version 11, level M" in made.stderr
    assert zbar(png) == [link]
    check = kopir("verify", "link", zbar(png)[0], "--trust", ops / "data/trust.json")
    assert check.returncode == 0, check.stderr


def test_verify_qr_reads_the_image_and_names_a_forgery(
    ops: Path, link: str, tmp_path: Path
) -> None:
    trust = ("--trust", ops / "data/trust.json")
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    assert kopir("qr", link, "--png", good).returncode == 0
    forged = link.replace("relay.example.org", "evil.example.org")
    assert kopir("qr", forged, "--png", bad).returncode == 0  # unchecked without --trust
    ok = kopir("verify", "qr", good, *trust)
    assert ok.returncode == 0 and "valid: signed by alice" in ok.stdout
    refused = kopir("verify", "qr", bad, *trust)
    assert refused.returncode == 1 and "INVALID: bad-signature" in refused.stderr
    blank = tmp_path / "blank.png"
    blank.write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
        "3a7e9b550000000a49444154789c63f80f00000101000518d84e0000000049454e44ae426082"
    ))  # fmt: skip
    nothing = kopir("verify", "qr", blank, *trust)
    assert nothing.returncode == 1 and "no QR code found" in nothing.stderr
    missing = kopir("verify", "qr", tmp_path / "nope.png", *trust)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1


def test_qr_svg_terminal_and_json(link: str, tmp_path: Path) -> None:
    svg = tmp_path / "link.svg"
    made = kopir("qr", link, "--svg", svg, "--terminal", "--level", "Q", "--json")
    assert made.returncode == 0, made.stderr
    assert svg.read_text().startswith("<svg ") and 'role="img"' in svg.read_text()
    lines = made.stdout.splitlines()
    assert json.loads(lines[-1])["version"] == 13
    assert "\u2588" in lines[0] and len(lines) == (69 + 8 + 1) // 2 + 1
    assert "not checked (give --trust FILE to check)" in made.stderr


def test_a_forged_link_fails_with_one_line(ops: Path, link: str, tmp_path: Path) -> None:
    forged = link.replace("relay.example.org", "evil.example.org")
    done = kopir("qr", forged, "--png", tmp_path / "x.png", "--trust", ops / "data/trust.json")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "kopir: the link does not verify: bad-signature: the link was changed or forged"
    ]
    assert not (tmp_path / "x.png").exists()


def test_an_unsigned_link_is_encoded_with_a_warning(tmp_path: Path) -> None:
    done = kopir("qr", URL, "--png", tmp_path / "u.png")
    assert done.returncode == 0 and "warning: this link is not signed" in done.stderr
    assert zbar(tmp_path / "u.png") == [URL]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert kopir("qr", URL).returncode == 2  # no output chosen
    bad = kopir("qr", "https://example.com/", "--terminal")
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "kopir: not a proxy link: not a tg://proxy, tg://socks or t.me proxy link"
    ]
    unwritable = kopir("qr", URL, "--png", tmp_path / "missing-dir" / "x.png")
    assert unwritable.returncode == 1 and unwritable.stderr.splitlines()[-1].startswith(
        "kopir: cannot write"
    )


def run_in_process(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


PIECES = st.sampled_from(
    ["tg://proxy?", "https://t.me/proxy?", "tg://socks?", "server=", "relay.example.org", "&",
     "port=", "443", "secret=", SECRET, "kid=", "exp=", "sig=", "%", "=", "?", "\u0416", " "]
)  # fmt: skip


@settings(max_examples=150)
@given(text=st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=14).map("".join)))
def test_any_input_gives_a_code_or_one_clear_line(text: str) -> None:
    code, out, err = run_in_process("qr", "--terminal", "--", text)
    assert "Traceback" not in err
    if code == 0:
        assert "\u2588" in out
    else:
        assert code == 2
        assert len(err.splitlines()) == 1 and err.startswith("kopir: not a proxy link: ")


# -- poster ---------------------------------------------------------------------------------


def test_poster_from_a_links_file(ops: Path, link: str, tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text(f"# batch 7\n{link}\n\n{link.replace('tg://', 'https://t.me/')}\n")
    html = tmp_path / "poster.html"
    done = kopir(
        "poster", "--out", html, "--links", links, "--trust", ops / "data/trust.json",
        "--batch", "almaty-7", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["links"] == [link, link] and data["batch"] == "almaty-7"
    page = html.read_text("utf-8")
    assert page.count("<article ") == 2 and "Batch almaty-7" in page


def test_poster_signs_the_config_relays_and_prints_a_pdf(ops: Path, tmp_path: Path) -> None:
    html, pdf = tmp_path / "poster.html", tmp_path / "poster.pdf"
    done = kopir(
        "poster", "-c", ops / "config.toml", "--out", html, "--pdf", pdf,
        "--host", "relay.example.org", "--count", "1", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (made,) = json.loads(done.stdout)["links"]
    assert made.startswith(f"tg://proxy?server=relay.example.org&port=8443&secret=ee{RELAY_KEY}")
    assert pdf.read_bytes().startswith(b"%PDF")
    check = kopir("verify", "link", made, "--trust", ops / "data/trust.json")
    assert check.returncode == 0, check.stderr


def test_poster_refuses_bad_links_and_a_missing_chromium(
    ops: Path, link: str, tmp_path: Path
) -> None:
    links = tmp_path / "links.txt"
    links.write_text(link + "\n" + link.replace("port=443", "port=444") + "\n")
    html = tmp_path / "p.html"
    bad = kopir("poster", "--out", html, "--links", links, "-c", ops / "config.toml")
    assert bad.returncode == 1 and not html.exists()
    assert bad.stderr.splitlines() == [
        "kopir: link 2 does not verify (bad-signature: the link was changed or forged); "
        "fix or remove it"
    ]
    links.write_text(link + "\n")
    no_pdf = kopir(
        "poster", "--out", html, "--links", links, "-c", ops / "config.toml",
        "--pdf", tmp_path / "p.pdf", "--chromium", "no-such-chromium-kopir",
    )  # fmt: skip
    assert no_pdf.returncode == 1 and "Chromium is not installed" in no_pdf.stderr
    assert len(no_pdf.stderr.splitlines()) == 1
    assert kopir("poster", "--out", html, "--links", links, "--count", "0").returncode == 2
