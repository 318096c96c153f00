"""Reading and writing minisign key and signature files.

The formats are in ``signing.minisign``; this module adds the file system: secret keys are
written with mode 0600 and never overwritten, and passphrases come from the environment
variable ``KOPIR_KEY_PASSPHRASE`` or a terminal prompt, never from a command-line flag.
"""

from __future__ import annotations

import getpass
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from signing.errors import FormatError, KeyFileError, SigningError
from signing.fileio import read_text, write_atomic
from signing.minisign import PublicKey, SecretKey, Signature, parse_secret_key, parse_signature

PASSPHRASE_ENV = "KOPIR_KEY_PASSPHRASE"

# ``.<KEYID>.minisig`` after a document's name, the key id as minisign prints it (upper-case
# hex, no zero padding). Strict, so that ``trust.json.v1.<KEYID>.minisig``, an archived
# version's signature, is not taken for one of ``trust.json``'s own.
_SIGNATURE_SUFFIX = re.compile(r"\.([0-9A-F]{1,16})\.minisig")

PassphraseSource = Callable[[], bytes]


def passphrase_from_env_or_prompt(confirm: bool = False) -> bytes:
    """The passphrase from ``KOPIR_KEY_PASSPHRASE``, or asked on the terminal."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        if not value:
            raise KeyFileError(f"{PASSPHRASE_ENV} is set but empty")
        return value.encode("utf-8")
    if not sys.stdin.isatty():
        raise KeyFileError(
            f"the secret key is encrypted: set {PASSPHRASE_ENV} or run on a terminal to be asked"
        )
    first = getpass.getpass("Passphrase for the secret key: ")
    if confirm and getpass.getpass("Passphrase again: ") != first:
        raise KeyFileError("the two passphrases differ")
    if not first:
        raise KeyFileError("an empty passphrase is not allowed")
    return first.encode("utf-8")


def key_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """``DIR/N.pub`` and ``DIR/N.key``."""
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} is not a plain file name")
    return out_dir / f"{name}.pub", out_dir / f"{name}.key"


def generate_key_pair(
    out_dir: Path, name: str, passphrase: bytes | None, **scrypt: int
) -> tuple[Path, Path, SecretKey]:
    """Create ``DIR/N.pub`` and ``DIR/N.key`` (0600). Existing files are never replaced."""
    pub_path, key_path = key_paths(out_dir, name)
    for path in (pub_path, key_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = SecretKey.generate()
    secret_text = key.text(passphrase, **scrypt)
    write_atomic(key_path, secret_text.encode("ascii"), 0o600, exclusive=True)
    write_atomic(pub_path, key.public_key.text().encode("ascii"), 0o644, exclusive=True)
    return pub_path, key_path, key


def load_public_key(path: Path) -> PublicKey:
    try:
        return PublicKey.parse(read_text(path, "public key"))
    except FormatError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def load_secret_key(
    path: Path, passphrase: PassphraseSource = passphrase_from_env_or_prompt
) -> SecretKey:
    """Load and, when needed, decrypt a secret key file (ours or stock minisign's)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise KeyFileError(f"cannot read secret key {path}: {exc.strerror}") from exc
    if _is_public_key(path):
        raise KeyFileError(f"{path} is a public key; a secret key (a .key file) is needed here")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"secret key {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        parsed = parse_secret_key(read_text(path, "secret key"))
    except FormatError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    try:
        return parsed.decrypt(passphrase() if parsed.encrypted else None)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def _is_public_key(path: Path) -> bool:
    """Whether ``path`` holds a public key (a common mix-up for a secret key's path)."""
    try:
        PublicKey.parse(read_text(path, "key"))
    except (SigningError, OSError):
        return False
    return True


def load_signature(path: Path) -> Signature:
    try:
        return parse_signature(read_text(path, "signature"))
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def save_signature(path: Path, signature: Signature) -> None:
    write_atomic(path, signature.text().encode("utf-8"))


def signature_files(document: Path) -> dict[str, Path]:
    """A document's own ``<name>.<KEYID>.minisig`` files beside it, by key id, sorted.

    Only the exact pattern counts: ``trust.json.v1.<KEYID>.minisig`` belongs to the archived
    ``trust.json.v1``, not to ``trust.json``.
    """
    found: dict[str, Path] = {}
    for path in sorted(document.parent.glob("*.minisig")):
        suffix = path.name[len(document.name) :]
        match = _SIGNATURE_SUFFIX.fullmatch(suffix)
        if match and path.name.startswith(document.name):
            found[match.group(1)] = path
    return found
