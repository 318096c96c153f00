"""Signed proxy list documents (DESIGN.md §5.4).

Theory of operation
-------------------
``list.json`` is canonical JSON. Each signer writes ``list.json.<KEYID>.minisig``, a prehashed
minisign signature whose trusted comment is
``kopir-list version=<N> expires=<RFC3339> sha256=<hex>``, so stock ``minisign -V`` checks it
and the comment ties the signature to this version and these bytes.

A verifier accepts a list when at least ``threshold.lists`` distinct, unrevoked keys with the
``lists`` role signed it, it has not expired, and its version is above the highest version it
accepted before from that publisher (``ListState``), which defeats rollback and freeze.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signing import strictjson
from signing.canonical import (
    canonical_json,
    exact_keys,
    parse_canonical,
    parse_rfc3339,
    require,
)
from signing.errors import FormatError, SigningError, VerificationError
from signing.fileio import read_bytes, write_atomic
from signing.minisign import SecretKey, Signature, sign
from signing.trust import TrustRoot, require_threshold

FORMAT = "kopir-list/1"
_LOWER_HEX = frozenset("0123456789abcdef")
_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "domain": (str, type(None)),
    "last_ok": (str, type(None)),
    "port": int,
    "ports_tried": list,
    "rtt_ms": (int, float, type(None)),
    "secret": str,
    "server": str,
    "tags": list,
    "type": str,
}


@dataclass(frozen=True)
class ListDocument:
    """A parsed list document; ``proxies`` are kept as the JSON objects they are."""

    publisher: str
    version: int
    issued: str
    expires: str
    proxies: tuple[dict[str, Any], ...] = field(hash=False)
    previous: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "expires": self.expires,
            "format": FORMAT,
            "issued": self.issued,
            "previous": self.previous,
            "proxies": [dict(p) for p in self.proxies],
            "publisher": self.publisher,
            "version": self.version,
        }

    def encode(self) -> bytes:
        data = canonical_json(self.to_json())
        parse_list(data)  # never emit a document we would refuse to read
        return data


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _check_entry(entry: object, index: int) -> dict[str, Any]:
    what = f"list proxy #{index}"
    if not isinstance(entry, dict):
        raise FormatError(f"{what}: expected an object")
    exact_keys(entry, set(_ENTRY_FIELDS), what)
    for name, kind in _ENTRY_FIELDS.items():
        require(entry, name, kind, what)
    if not 1 <= entry["port"] <= 65535:
        raise FormatError(f"{what}: port out of range")
    if not all(_is_port(p) for p in entry["ports_tried"]):
        raise FormatError(f"{what}: ports_tried must be port numbers 1-65535")
    if not all(isinstance(t, str) for t in entry["tags"]):
        raise FormatError(f"{what}: tags must be strings")
    secret = entry["secret"]
    if len(secret) < 32 or len(secret) % 2 or not _LOWER_HEX.issuperset(secret):
        raise FormatError(f"{what}: secret must be lower-case hex of at least 16 bytes")
    if entry["last_ok"] is not None:
        parse_rfc3339(entry["last_ok"], f"{what} last_ok")
    return entry


def parse_list(data: bytes) -> ListDocument:
    """Parse ``list.json`` strictly: canonical form, known fields, the right types."""
    obj = parse_canonical(data, "list")
    exact_keys(
        obj,
        {"expires", "format", "issued", "previous", "proxies", "publisher", "version"},
        "list",
    )
    if obj.get("format") != FORMAT:
        raise FormatError(f"list: format must be {FORMAT!r}")
    version = require(obj, "version", int, "list")
    if version < 1:
        raise FormatError("list: version must be at least 1")
    for key in ("issued", "expires"):
        parse_rfc3339(require(obj, key, str, "list"), f"list {key}")
    previous = require(obj, "previous", (str, type(None)), "list")
    if previous is not None and (len(previous) != 64 or not _LOWER_HEX.issuperset(previous)):
        raise FormatError("list: previous must be a lower-case SHA-256 hex digest or null")
    proxies = tuple(_check_entry(p, i) for i, p in enumerate(require(obj, "proxies", list, "list")))
    publisher = require(obj, "publisher", str, "list")
    return ListDocument(publisher, version, obj["issued"], obj["expires"], proxies, previous)


def trusted_comment(doc: ListDocument, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"kopir-list version={doc.version} expires={doc.expires} sha256={digest}"


def sign_list(data: bytes, key: SecretKey) -> Signature:
    """A prehashed minisign signature over the list bytes, with the binding trusted comment."""
    return sign(key, data, trusted_comment(parse_list(data), data))


def signature_name(list_name: str, signature: Signature) -> str:
    """``list.json.<KEYID>.minisig``."""
    return f"{list_name}.{signature.hex_id}.minisig"


@dataclass(frozen=True)
class ListVerdict:
    document: ListDocument
    signers: tuple[str, ...]
    """Names (from the trust root) of the keys whose signatures counted."""


def verify_list(
    data: bytes,
    signatures: Sequence[Signature],
    trust: TrustRoot,
    now: float,
    last_seen: tuple[int, str] | None = None,
) -> ListVerdict:
    """Check threshold, expiry and rollback; raise ``VerificationError`` with the reason."""
    doc = parse_list(data)
    comment = trusted_comment(doc, data)
    label = f"list version {doc.version}"
    good = require_threshold(trust, "lists", data, signatures, comment, now, label)
    if now >= parse_rfc3339(doc.expires, "expires"):
        raise VerificationError("expired", f"list version {doc.version} expired {doc.expires}")
    if last_seen is not None:
        _check_not_rollback(doc.version, hashlib.sha256(data).hexdigest(), last_seen)
    return ListVerdict(doc, tuple(sorted(good)))


def _check_not_rollback(version: int, digest: str, last_seen: tuple[int, str]) -> None:
    """Only newer versions pass, and the very list accepted last time (re-checking is fine)."""
    last_version, last_digest = last_seen
    if version < last_version:
        raise VerificationError(
            "rollback", f"version {version} is older than version {last_version} accepted before"
        )
    if version == last_version and digest != last_digest:
        raise VerificationError(
            "rollback", f"a different list with the same version {version} was accepted before"
        )


def _parse_state(data: bytes) -> dict[str, tuple[int, str]]:
    """``lists.json``: publisher -> [version, SHA-256 hex], as ``ListState.accept`` writes it."""
    state: dict[str, tuple[int, str]] = {}
    for publisher, value in strictjson.loads_object(data).items():
        what = f"entry {publisher[:80]!r}"
        if not isinstance(value, list) or len(value) != 2:
            raise FormatError(f"{what} is not a [version, sha256] pair")
        version, digest = value
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise FormatError(f"{what}: the version is not a whole number of at least 1")
        if not isinstance(digest, str) or len(digest) != 64 or not _LOWER_HEX.issuperset(digest):
            raise FormatError(f"{what}: the digest is not a lower-case SHA-256 hex digest")
        state[publisher] = (version, digest)
    return state


class ListState:
    """The newest list accepted per publisher (version, SHA-256), in ``<state>/lists.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lists.json"

    def load(self) -> dict[str, tuple[int, str]]:
        if not self.path.exists():
            return {}
        data = read_bytes(self.path, "verifier state")
        try:
            return _parse_state(data)
        except FormatError as exc:
            raise SigningError(f"verifier state {self.path} is damaged: {exc}") from None

    def last_seen(self, publisher: str) -> tuple[int, str] | None:
        return self.load().get(publisher)

    def accept(self, publisher: str, version: int, data: bytes) -> None:
        state = self.load()
        if state.get(publisher, (0, ""))[0] < version:
            state[publisher] = (version, hashlib.sha256(data).hexdigest())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, canonical_json(state))
