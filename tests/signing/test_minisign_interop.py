"""Interop with the stock ``minisign`` tool (Debian package, 0.11), in both directions.

DESIGN.md §5.3-5.4 and PROTOCOLS.md "minisign files": our public keys, secret keys (plain and
scrypt-encrypted) and detached signatures are minisign's own formats, so the stock tool reads
what kopir writes and kopir reads what the stock tool writes. Every test runs real processes
(``minisign`` and ``python -m kopir.cli``) on real files; nothing touches the network.

The stock tool is a hard requirement: CI installs it with ``apt-get install minisign``, and when
it is missing these tests fail instead of skipping.

Encrypted keys cost one scrypt run with minisign's "sensitive" limits (1 GiB, a few seconds)
per use. The four key pairs are made once per module and the tests that decrypt one are
marked ``slow``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from signing.errors import VerificationError
from signing.keyfiles import load_public_key, load_secret_key
from signing.listdoc import ListDocument
from signing.minisign import Signature, parse_signature, sign, verify

# Spaces on purpose: the passphrase must survive minisign's stdin reader and our env variable.
PASSPHRASE = "correct horse battery staple"
WRONG_PASSPHRASE = "correct horse battery stapler"
PASSPHRASE_ENV = {"KOPIR_KEY_PASSPHRASE": PASSPHRASE}

# Stock minisign prints the key id with %PRIX64: upper-case hex, no zero padding.
PUBLIC_KEY_FIRST_LINE = re.compile(
    r"untrusted comment: minisign public key ([1-9A-F][0-9A-F]{0,15}|0)"
)
VERIFIED = "Signature and comment signature verified"
LIST_COMMENT_PREFIX = "kopir-list version=1 expires=2099-01-01T00:00:00Z sha256="


# -- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    pub: Path
    key: Path
    key_id: str
    """As minisign prints it: ``%X`` of the little-endian uint64 (no zero padding)."""


def minisign(
    *args: str | os.PathLike[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the stock minisign; without ``stdin`` its stdin is /dev/null (no password given)."""
    exe = shutil.which("minisign")
    if exe is None:
        pytest.fail(
            "the stock minisign tool is not on PATH; install it (apt-get install minisign): "
            "the interop tests need the real peer and must not be skipped"
        )
    return subprocess.run(
        [exe, *(os.fspath(a) for a in args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (
        f"{proc.args!r} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """kopir failed cleanly: exit 1, one ``kopir: ...`` line on stderr, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kopir: "), proc.stderr
    return lines[0]


def key_id_of(pub: Path) -> str:
    first = pub.read_text(encoding="ascii").split("\n")[0]
    match = PUBLIC_KEY_FIRST_LINE.fullmatch(first)
    assert match, f"{pub}: unexpected first line {first!r}"
    return match.group(1)


def signature_algorithm(sig: Path) -> bytes:
    """``b"ED"`` (prehashed) or ``b"Ed"`` (legacy), from the signature file's second line."""
    return base64.b64decode(sig.read_text(encoding="utf-8").split("\n")[1])[:2]


def secret_key_kdf(key: Path) -> bytes:
    """``b"Sc"`` for an scrypt-encrypted secret key, two zero bytes for a plain one."""
    return base64.b64decode(key.read_text(encoding="ascii").split("\n")[1])[2:4]


def trusted_comment_printed(proc: subprocess.CompletedProcess[str]) -> str:
    """The trusted comment as ``minisign -V`` prints it."""
    found = [
        line.removeprefix("Trusted comment: ")
        for line in proc.stdout.splitlines()
        if line.startswith("Trusted comment: ")
    ]
    assert len(found) == 1, proc.stdout
    return found[0]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def library_verify(pub: Path, sig: Path, data: bytes) -> Signature:
    """Verify with the library, over the message and (for ``ED``) over its digest too."""
    public = load_public_key(pub)
    signature = parse_signature(sig.read_text(encoding="utf-8"))
    verify(public, signature, message=data)
    if signature.prehashed:
        verify(public, signature, digest=hashlib.blake2b(data, digest_size=64).digest())
    return signature


# -- keys, made once per module -----------------------------------------------------------------


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def kopir_key(run_kopir, keydir: Path) -> KeyPair:
    """An unencrypted key pair from ``kopir keys generate``."""
    assert_ok(run_kopir("keys", "generate", "--name", "plain", "--out", keydir))
    pub, key = keydir / "plain.pub", keydir / "plain.key"
    return KeyPair(pub, key, key_id_of(pub))


@pytest.fixture(scope="module")
def kopir_encrypted_key(run_kopir, keydir: Path) -> KeyPair:
    """An encrypted key pair from ``kopir keys generate --encrypt`` (one scrypt run)."""
    proc = run_kopir(
        "keys", "generate", "--name", "sealed", "--out", keydir, "--encrypt", env=PASSPHRASE_ENV
    )
    assert_ok(proc)
    pub, key = keydir / "sealed.pub", keydir / "sealed.key"
    return KeyPair(pub, key, key_id_of(pub))


@pytest.fixture(scope="module")
def stock_key(keydir: Path) -> KeyPair:
    """An unencrypted key pair from ``minisign -G -W``."""
    pub, key = keydir / "stock.pub", keydir / "stock.key"
    assert_ok(minisign("-G", "-W", "-p", pub, "-s", key))
    return KeyPair(pub, key, key_id_of(pub))


@pytest.fixture(scope="module")
def stock_encrypted_key(keydir: Path) -> KeyPair:
    """An encrypted key pair from ``minisign -G``, the password typed twice on stdin."""
    pub, key = keydir / "stock-sealed.pub", keydir / "stock-sealed.key"
    assert_ok(minisign("-G", "-p", pub, "-s", key, stdin=f"{PASSPHRASE}\n{PASSPHRASE}\n"))
    assert secret_key_kdf(key) == b"Sc"
    return KeyPair(pub, key, key_id_of(pub))


# -- 1. kopir signs, stock minisign verifies ---------------------------------------------------


@pytest.mark.parametrize("require_prehashed", [False, True], ids=["V", "V-H"])
def test_stock_verifies_kopir_default_prehashed_signature(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, require_prehashed: bool
) -> None:
    target = write(tmp_path / "release.tar", b"kopir release\n" * 1000)
    assert_ok(run_kopir("sign", "file", target, "--key", kopir_key.key))
    sig = tmp_path / "release.tar.minisig"
    assert signature_algorithm(sig) == b"ED"

    flags = ["-H"] if require_prehashed else []
    proc = assert_ok(minisign("-V", *flags, "-m", target, "-p", kopir_key.pub))
    assert VERIFIED in proc.stdout
    comment = trusted_comment_printed(proc)
    assert comment.startswith("timestamp:")
    assert "file:release.tar" in comment


def test_stock_verifies_kopir_legacy_signature(
    run_kopir, kopir_key: KeyPair, tmp_path: Path
) -> None:
    target = write(tmp_path / "notes.txt", b"legacy Ed signatures sign the raw message\n")
    sig = tmp_path / "notes.legacy.minisig"
    assert_ok(run_kopir("sign", "file", target, "--key", kopir_key.key, "--legacy", "--sig", sig))
    assert signature_algorithm(sig) == b"Ed"

    proc = assert_ok(minisign("-V", "-m", target, "-x", sig, "-p", kopir_key.pub))
    assert VERIFIED in proc.stdout
    # -H demands a prehashed signature, so the stock tool really did see a legacy one.
    strict = minisign("-V", "-H", "-m", target, "-x", sig, "-p", kopir_key.pub)
    assert strict.returncode == 1, (strict.stdout, strict.stderr)
    assert "Legacy" in strict.stderr


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_stock_prints_kopir_custom_trusted_comment(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    comment = "kopir 0.1.0 — список прокси #7 build=42"
    target = write(tmp_path / "list.bin", b"\x00\x01binary\xff" * 50)
    flags = ["--legacy"] if legacy else []
    proc = run_kopir(
        "sign", "file", target, "--key", kopir_key.key, "--trusted-comment", comment, *flags
    )
    assert_ok(proc)

    proc = assert_ok(minisign("-V", "-m", target, "-p", kopir_key.pub))
    assert trusted_comment_printed(proc) == comment
    quiet = assert_ok(minisign("-V", "-Q", "-m", target, "-p", kopir_key.pub))
    assert quiet.stdout == comment + "\n"


@pytest.mark.parametrize("size", [0, 5 * 1024 * 1024 + 7], ids=["empty", "5MB"])
@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_stock_verifies_kopir_signatures_of_empty_and_large_files(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, size: int, legacy: bool
) -> None:
    target = write(tmp_path / "blob", os.urandom(size))
    flags = ["--legacy"] if legacy else []
    assert_ok(run_kopir("sign", "file", target, "--key", kopir_key.key, *flags))
    sig = tmp_path / "blob.minisig"
    assert signature_algorithm(sig) == (b"Ed" if legacy else b"ED")
    proc = assert_ok(minisign("-V", "-m", target, "-p", kopir_key.pub))
    assert VERIFIED in proc.stdout


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_stock_rejects_kopir_signed_file_changed_by_one_byte(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    target = write(tmp_path / "payload", os.urandom(4096))
    flags = ["--legacy"] if legacy else []
    assert_ok(run_kopir("sign", "file", target, "--key", kopir_key.key, *flags))
    assert_ok(minisign("-V", "-m", target, "-p", kopir_key.pub))

    flip_byte(target, 1234)
    proc = minisign("-V", "-m", target, "-p", kopir_key.pub)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Signature verification failed" in proc.stderr
    assert VERIFIED not in proc.stdout


# -- 2. stock minisign signs, kopir verifies ---------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_kopir_verifies_stock_signature(
    run_kopir, stock_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    data = b"signed by the stock tool\n" * 64
    target = write(tmp_path / "stock.txt", data)
    comment = "stock minisign trusted comment"
    flags = ["-l"] if legacy else []
    assert_ok(minisign("-S", *flags, "-s", stock_key.key, "-m", target, "-t", comment))
    sig = tmp_path / "stock.txt.minisig"
    assert signature_algorithm(sig) == (b"Ed" if legacy else b"ED")

    proc = assert_ok(run_kopir("verify", "file", target, "--sig", sig, "--pub", stock_key.pub))
    assert f"valid: signed by {stock_key.key_id}" in proc.stdout
    assert f"trusted comment: {comment}" in proc.stdout

    signature = library_verify(stock_key.pub, sig, data)
    assert signature.hex_id == stock_key.key_id
    assert signature.prehashed is not legacy
    assert signature.trusted_comment == comment
    assert signature.untrusted_comment == "signature from minisign secret key"


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_kopir_rejects_stock_signature_over_changed_file(
    run_kopir, stock_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    target = write(tmp_path / "doc", os.urandom(2048))
    flags = ["-l"] if legacy else []
    assert_ok(minisign("-S", *flags, "-s", stock_key.key, "-m", target))
    sig = tmp_path / "doc.minisig"
    assert_ok(run_kopir("verify", "file", target, "--sig", sig, "--pub", stock_key.pub))

    flip_byte(target, 100)
    proc = run_kopir("verify", "file", target, "--sig", sig, "--pub", stock_key.pub)
    line = assert_one_line_error(proc)
    assert "bad-signature" in line
    assert "valid:" not in proc.stdout

    with pytest.raises(VerificationError) as caught:
        library_verify(stock_key.pub, sig, target.read_bytes())
    assert caught.value.reason == "bad-signature"


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_kopir_rejects_stock_signature_with_changed_trusted_comment(
    run_kopir, stock_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    data = b"version one of something\n"
    target = write(tmp_path / "doc", data)
    flags = ["-l"] if legacy else []
    assert_ok(minisign("-S", *flags, "-s", stock_key.key, "-m", target, "-t", "version=1"))
    sig = tmp_path / "doc.minisig"
    lines = sig.read_text(encoding="utf-8").split("\n")
    assert lines[2] == "trusted comment: version=1"
    lines[2] = "trusted comment: version=2"
    sig.write_text("\n".join(lines), encoding="utf-8")

    stock = minisign("-V", "-m", target, "-p", stock_key.pub)
    assert stock.returncode == 1, "the stock tool should reject the edited comment too"

    proc = run_kopir("verify", "file", target, "--sig", sig, "--pub", stock_key.pub)
    line = assert_one_line_error(proc)
    assert "bad-signature" in line
    assert "version=2" not in proc.stdout

    with pytest.raises(VerificationError) as caught:
        library_verify(stock_key.pub, sig, data)
    assert caught.value.reason == "bad-signature"


def test_kopir_rejects_stock_signature_checked_against_another_key(
    run_kopir, stock_key: KeyPair, kopir_key: KeyPair, tmp_path: Path
) -> None:
    target = write(tmp_path / "doc", b"whose signature is this?\n")
    assert_ok(minisign("-S", "-s", stock_key.key, "-m", target))
    sig = tmp_path / "doc.minisig"
    proc = run_kopir("verify", "file", target, "--sig", sig, "--pub", kopir_key.pub)
    line = assert_one_line_error(proc)
    assert "unknown-key" in line
    assert stock_key.key_id in line


# -- 3. stock minisign signs with kopir's secret keys -------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed", "legacy"])
def test_stock_signs_with_unencrypted_kopir_key(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, legacy: bool
) -> None:
    assert secret_key_kdf(kopir_key.key) == b"\x00\x00"
    data = b"the stock tool holds the pen, kopir made the key\n"
    target = write(tmp_path / "doc", data)
    flags = ["-l"] if legacy else []
    assert_ok(minisign("-S", *flags, "-s", kopir_key.key, "-m", target))
    sig = tmp_path / "doc.minisig"

    assert VERIFIED in assert_ok(minisign("-V", "-m", target, "-p", kopir_key.pub)).stdout
    assert_ok(run_kopir("verify", "file", target, "--sig", sig, "--pub", kopir_key.pub))
    assert library_verify(kopir_key.pub, sig, data).hex_id == kopir_key.key_id


@pytest.mark.slow
def test_stock_signs_with_encrypted_kopir_key(
    run_kopir, kopir_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    assert secret_key_kdf(kopir_encrypted_key.key) == b"Sc"
    assert stat.S_IMODE(kopir_encrypted_key.key.stat().st_mode) == 0o600
    data = b"signed by the stock tool with an encrypted kopir key\n"
    target = write(tmp_path / "doc", data)
    proc = minisign("-S", "-s", kopir_encrypted_key.key, "-m", target, stdin=f"{PASSPHRASE}\n")
    assert_ok(proc)
    sig = tmp_path / "doc.minisig"

    pub = kopir_encrypted_key.pub
    assert VERIFIED in assert_ok(minisign("-V", "-m", target, "-p", pub)).stdout
    assert_ok(run_kopir("verify", "file", target, "--sig", sig, "--pub", pub))
    assert library_verify(pub, sig, data).hex_id == kopir_encrypted_key.key_id


@pytest.mark.slow
def test_stock_refuses_encrypted_kopir_key_with_wrong_passphrase(
    kopir_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    target = write(tmp_path / "doc", b"never signed\n")
    proc = minisign(
        "-S", "-s", kopir_encrypted_key.key, "-m", target, stdin=f"{WRONG_PASSPHRASE}\n"
    )
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Wrong password" in proc.stderr
    assert not (tmp_path / "doc.minisig").exists()


# -- 4. kopir signs with a stock encrypted key ------------------------------------------------


@pytest.mark.slow
def test_kopir_signs_with_encrypted_stock_key(
    run_kopir, stock_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    data = b"kopir holds the pen, the stock tool made the key\n"
    target = write(tmp_path / "doc", data)
    proc = run_kopir("sign", "file", target, "--key", stock_encrypted_key.key, env=PASSPHRASE_ENV)
    assert_ok(proc)
    sig = tmp_path / "doc.minisig"
    assert signature_algorithm(sig) == b"ED"

    pub = stock_encrypted_key.pub
    assert VERIFIED in assert_ok(minisign("-V", "-m", target, "-p", pub)).stdout
    assert_ok(minisign("-V", "-H", "-m", target, "-p", pub))
    assert library_verify(pub, sig, data).hex_id == stock_encrypted_key.key_id


@pytest.mark.slow
def test_kopir_rejects_wrong_passphrase_for_encrypted_stock_key(
    run_kopir, stock_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    target = write(tmp_path / "doc", b"never signed\n")
    proc = run_kopir(
        "sign", "file", target, "--key", stock_encrypted_key.key,
        env={"KOPIR_KEY_PASSPHRASE": WRONG_PASSPHRASE},
    )  # fmt: skip
    line = assert_one_line_error(proc)
    assert "passphrase" in line
    assert WRONG_PASSPHRASE not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    assert not (tmp_path / "doc.minisig").exists()


@pytest.mark.slow
def test_kopir_needs_a_passphrase_for_encrypted_stock_key_and_does_not_hang(
    run_kopir, stock_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    target = write(tmp_path / "doc", b"never signed\n")
    # No KOPIR_KEY_PASSPHRASE and stdin is /dev/null, not a terminal: no prompt, a clear error.
    proc = run_kopir("sign", "file", target, "--key", stock_encrypted_key.key, timeout=30)
    line = assert_one_line_error(proc)
    assert "KOPIR_KEY_PASSPHRASE" in line
    assert not (tmp_path / "doc.minisig").exists()


@pytest.mark.slow
def test_library_signs_with_encrypted_stock_key(
    stock_encrypted_key: KeyPair, tmp_path: Path
) -> None:
    key = load_secret_key(stock_encrypted_key.key, passphrase=lambda: PASSPHRASE.encode())
    assert key.hex_id == stock_encrypted_key.key_id
    assert key.public_key == load_public_key(stock_encrypted_key.pub)

    data = b"signed through signing.minisign.sign\n"
    target = write(tmp_path / "doc", data)
    sig = tmp_path / "doc.minisig"
    sig.write_text(sign(key, data, "library comment").text(), encoding="utf-8")
    proc = assert_ok(minisign("-V", "-m", target, "-p", stock_encrypted_key.pub))
    assert trusted_comment_printed(proc) == "library comment"


# -- 5. key file hygiene -----------------------------------------------------------------------


def test_kopir_secret_key_is_mode_0600(kopir_key: KeyPair) -> None:
    assert stat.S_IMODE(kopir_key.key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("existing", "encrypt"),
    [("both", False), ("both", True), ("pub only", False), ("key only", False)],
)
def test_keys_generate_refuses_to_overwrite(
    run_kopir, tmp_path: Path, existing: str, encrypt: bool
) -> None:
    out = tmp_path / "keys"
    assert_ok(run_kopir("keys", "generate", "--name", "alice", "--out", out))
    pub, key = out / "alice.pub", out / "alice.key"
    if existing == "pub only":
        key.unlink()
    elif existing == "key only":
        pub.unlink()
    before = {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()}

    flags = ["--encrypt"] if encrypt else []
    proc = run_kopir(
        "keys", "generate", "--name", "alice", "--out", out, *flags, env=PASSPHRASE_ENV
    )
    line = assert_one_line_error(proc)
    assert "already exists" in line
    after = {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir()}
    assert after == before  # nothing replaced, nothing half-written, no temporary left over


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_kopir_refuses_secret_key_readable_by_others(
    run_kopir, kopir_key: KeyPair, tmp_path: Path, mode: int
) -> None:
    loose = tmp_path / "loose.key"
    shutil.copyfile(kopir_key.key, loose)
    loose.chmod(mode)
    target = write(tmp_path / "doc", b"never signed\n")
    proc = run_kopir("sign", "file", target, "--key", loose)
    line = assert_one_line_error(proc)
    assert f"chmod 600 {loose}" in line
    assert not (tmp_path / "doc.minisig").exists()


def test_public_key_file_is_what_stock_minisign_writes(
    kopir_key: KeyPair, stock_key: KeyPair, tmp_path: Path
) -> None:
    text = kopir_key.pub.read_text(encoding="ascii")
    first, second, rest = text.split("\n")
    assert rest == ""
    assert PUBLIC_KEY_FIRST_LINE.fullmatch(first)
    assert base64.b64decode(second, validate=True)[:2] == b"Ed"

    # The stock tool recomputes the public key file from our secret key: byte for byte ours.
    recovered = tmp_path / "recovered.pub"
    assert_ok(minisign("-R", "-s", kopir_key.key, "-p", recovered))
    assert recovered.read_text(encoding="ascii") == text

    # And the key id it prints when ids differ is the one on our first line.
    target = write(tmp_path / "doc", b"x")
    assert_ok(minisign("-S", "-s", stock_key.key, "-m", target))
    proc = minisign("-V", "-m", target, "-p", kopir_key.pub)
    assert proc.returncode == 1
    assert f"the key id in the public key is {kopir_key.key_id}" in proc.stderr


def test_keys_generate_reports_the_key_id_in_the_public_key_file(run_kopir, tmp_path: Path) -> None:
    proc = assert_ok(run_kopir("keys", "generate", "--name", "bob", "--out", tmp_path, "--json"))
    assert f'"key_id": "{key_id_of(tmp_path / "bob.pub")}"' in proc.stdout
    assert '"encrypted": false' in proc.stdout


# -- 6. signed lists ---------------------------------------------------------------------------


def test_stock_verifies_kopir_signed_list(run_kopir, kopir_key: KeyPair, tmp_path: Path) -> None:
    doc = ListDocument("pub", 1, "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", (), None)
    data = doc.encode()
    listing = write(tmp_path / "list.json", data)
    assert_ok(run_kopir("sign", "list", listing, "--key", kopir_key.key))

    sig = tmp_path / f"list.json.{kopir_key.key_id}.minisig"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.json", sig.name]
    assert signature_algorithm(sig) == b"ED"

    proc = assert_ok(minisign("-V", "-m", listing, "-x", sig, "-p", kopir_key.pub))
    assert VERIFIED in proc.stdout
    comment = trusted_comment_printed(proc)
    assert comment.startswith(LIST_COMMENT_PREFIX)
    assert comment == LIST_COMMENT_PREFIX + hashlib.sha256(data).hexdigest()
    assert_ok(minisign("-V", "-H", "-m", listing, "-x", sig, "-p", kopir_key.pub))

    flip_byte(listing, len(data) // 2)
    tampered = minisign("-V", "-m", listing, "-x", sig, "-p", kopir_key.pub)
    assert tampered.returncode == 1, (tampered.stdout, tampered.stderr)


def test_key_id_with_leading_zeros_matches_stock_minisign(tmp_path: Path) -> None:
    """minisign prints key ids without zero padding; our files must match it byte for byte."""
    from signing.minisign import SecretKey

    key = SecretKey(bytes([0x0D, 0, 0, 0, 0, 0, 0x10, 0x00]), bytes(range(32)))
    secret = tmp_path / "z.key"
    secret.write_text(key.text(None), encoding="ascii")
    secret.chmod(0o600)
    ours = tmp_path / "z.pub"
    ours.write_text(key.public_key.text(), encoding="ascii")
    assert ours.read_text().startswith("untrusted comment: minisign public key 1000000000000D\n")
    recovered = tmp_path / "recovered.pub"
    assert_ok(minisign("-R", "-s", secret, "-p", recovered))
    assert recovered.read_text(encoding="ascii") == ours.read_text(encoding="ascii")
