"""The distribution secret's file: hex text, mode 0600, created once and never replaced.

The secret keys every position on the distribution ring (``proxylist.distribute``): whoever
holds it can tell which relays any recipient gets, and a new one reshuffles everybody.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from proxylist.errors import DistributionError

MIN_SECRET_BYTES = 16
SECRET_BYTES = 32
"""The size :func:`generate_secret` writes."""


def check_secret(secret: bytes) -> None:
    """Refuse a secret too short to key the ring."""
    if len(secret) < MIN_SECRET_BYTES:
        raise DistributionError(
            f"the distribution secret has {len(secret)} bytes, at least {MIN_SECRET_BYTES} are"
            " needed; create one with a fresh random secret file"
        )


def generate_secret(path: Path) -> None:
    """Write a fresh random secret (hex, mode 0600) to a new file; an existing one is kept."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            os.fchmod(fd, 0o600)  # the mode above is only ever reduced by the umask
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
            out.flush()
            os.fsync(fd)
        os.link(tmp, path)  # unlike a rename, refuses to replace an existing secret
    except FileExistsError:
        raise DistributionError(
            f"distribution secret {path} already exists and is never replaced (a new secret"
            " reshuffles every recipient); remove it first only if you mean that"
        ) from None
    except OSError as exc:
        raise DistributionError(
            f"cannot create distribution secret {path}: {exc.strerror}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_secret(path: Path) -> bytes:
    """The distribution secret from a 0600 file of hex, refusing one others may read."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(4096)
    except OSError as exc:
        raise DistributionError(f"cannot read distribution secret {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise DistributionError(
            f"distribution secret {path} has mode {stat.S_IMODE(mode):o}; others may read it,"
            f" run: chmod 600 {path}"
        )
    try:
        digits = text.decode("ascii").strip(" \t\r\n")
        if not digits.isalnum():  # fromhex alone would skip spaces inside
            raise ValueError(digits)
        secret = bytes.fromhex(digits)
    except (UnicodeDecodeError, ValueError):
        raise DistributionError(
            f"distribution secret {path} is not hex text; create it again with a fresh secret"
        ) from None
    check_secret(secret)
    return secret
