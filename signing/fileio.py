"""Small file helpers shared by the signing package: atomic writes and bounded reads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from signing.errors import SigningError

# Documents we read (keys, signatures, lists, trust roots, notes) are small. A cap keeps a
# mistaken path (a disk image, /dev/zero) from eating memory.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A crash leaves either the old file or the new one, never half of it. The temporary file is
    created with ``mode`` from the start, so a secret is never briefly world-readable. With
    ``exclusive`` an existing file is an error instead of being replaced.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError instead of replacing
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bytes(path: Path, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """Read a whole small file, with an error that names it instead of a traceback."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise SigningError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise SigningError(f"{what} {path} is larger than {limit} bytes")
    return data


def read_text(path: Path, what: str) -> str:
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SigningError(f"{what} {path} is not UTF-8 text") from exc


def blake2b_file(path: Path) -> bytes:
    """BLAKE2b-512 of a file of any size, read in chunks (what prehashed signatures sign)."""
    state = hashlib.blake2b(digest_size=64)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                state.update(chunk)
    except OSError as exc:
        raise SigningError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return state.digest()
