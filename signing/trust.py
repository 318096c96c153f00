"""The trust root: which keys may sign what, and how many must agree (DESIGN.md §5.5).

Theory of operation
-------------------
``trust.json`` is canonical JSON::

    {"expires": "...", "format": "kopir-trust/1", "keys": [{"key": "RWQ...", "name": "alice",
     "revoked": null, "roles": ["lists", "root"]}, ...], "threshold": {"lists": 2, ...},
     "version": 1}

It is signed by its root keys; each signature is a prehashed minisign signature in
``trust.json.<KEYID>.minisig`` whose trusted comment binds version, expiry and hash.

Rotation follows TUF: version N+1 must carry a threshold of signatures from version N's root
keys *and* a threshold from its own root keys, so neither a stolen new key nor a stale old one
can move the root alone. A key with a ``revoked`` time counts for nothing from that time on.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

from signing.canonical import (
    canonical_json,
    exact_keys,
    parse_canonical,
    parse_rfc3339,
    require,
)
from signing.errors import FormatError, VerificationError
from signing.minisign import PublicKey, SecretKey, Signature, key_id_hex, sign, verify

FORMAT = "kopir-trust/1"
ROLES = ("root", "lists", "links", "log")


@dataclass(frozen=True)
class TrustKey:
    """One operator key named by the trust root."""

    name: str
    public_key: PublicKey
    roles: frozenset[str]
    revoked: str | None = None
    """RFC 3339 time from which the key counts for nothing."""

    @property
    def revoked_at(self) -> float | None:
        """``revoked`` as a Unix time; None for a key that was never revoked."""
        return None if self.revoked is None else parse_rfc3339(self.revoked, "revoked")

    def active(self, now: float) -> bool:
        revoked = self.revoked_at
        return revoked is None or now < revoked

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.public_key.line,
            "name": self.name,
            "revoked": self.revoked,
            "roles": sorted(self.roles),
        }


@dataclass(frozen=True)
class TrustRoot:
    version: int
    expires: str
    keys: tuple[TrustKey, ...]
    threshold: dict[str, int] = field(hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "expires": self.expires,
            "format": FORMAT,
            "keys": [k.to_json() for k in self.keys],
            "threshold": dict(self.threshold),
            "version": self.version,
        }

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @cached_property
    def by_key_id(self) -> dict[bytes, TrustKey]:
        return {k.public_key.key_id: k for k in self.keys}

    @cached_property
    def link_keys(self) -> dict[str, TrustKey]:
        """Keys with the ``links`` role, by the base64url key id that signed links carry."""
        return {link_kid(k.public_key.key_id): k for k in self.keys if "links" in k.roles}

    def key(self, key_id: bytes, role: str, now: float) -> TrustKey:
        """The key with this id and role, or ``unknown-key`` / ``revoked-key``."""
        found = self.by_key_id.get(key_id)
        if found is None or role not in found.roles:
            raise VerificationError("unknown-key", f"key {key_id_hex(key_id)} has no {role!r} role")
        if not found.active(now):
            raise VerificationError("revoked-key", f"key {found.name} was revoked {found.revoked}")
        return found

    def with_key(self, key: TrustKey) -> TrustRoot:
        if key.public_key.key_id in self.by_key_id:
            raise FormatError(f"key {key.public_key.hex_id} is already in the trust root")
        if any(k.name == key.name for k in self.keys):
            raise FormatError(f"a key named {key.name!r} is already in the trust root")
        return replace(self, keys=(*self.keys, key))

    def with_revoked(self, name_or_id: str, when: str) -> TrustRoot:
        parse_rfc3339(when, "revoked")
        hits = [k for k in self.keys if name_or_id in (k.name, k.public_key.hex_id)]
        if not hits:
            raise FormatError(f"no key named {name_or_id!r} in the trust root")
        keys = tuple(replace(k, revoked=when) if k in hits else k for k in self.keys)
        return replace(self, keys=keys)


@lru_cache(maxsize=256)
def link_kid(key_id: bytes) -> str:
    """The ``kid`` parameter of a signed link: base64url of the key id, unpadded."""
    return base64.urlsafe_b64encode(key_id).rstrip(b"=").decode("ascii")


def _parse_key(obj: object, index: int) -> TrustKey:
    what = f"trust root key #{index}"
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: expected an object")
    exact_keys(obj, {"key", "name", "revoked", "roles"}, what)
    name = require(obj, "name", str, what)
    roles = require(obj, "roles", list, what)
    if not name or not all(isinstance(r, str) and r in ROLES for r in roles) or not roles:
        raise FormatError(f"{what}: needs a name and roles among {', '.join(ROLES)}")
    if roles != sorted(set(roles)):
        raise FormatError(f"{what}: roles must be sorted and distinct")
    revoked = require(obj, "revoked", (str, type(None)), what)
    if revoked is not None:
        parse_rfc3339(revoked, f"{what} revoked")
    public = PublicKey.parse_line(require(obj, "key", str, what))
    return TrustKey(name, public, frozenset(roles), revoked)


def parse_trust_root(data: bytes) -> TrustRoot:
    """Parse ``trust.json`` strictly (canonical form, known fields, sane thresholds)."""
    obj = parse_canonical(data, "trust root")
    exact_keys(obj, {"expires", "format", "keys", "threshold", "version"}, "trust root")
    if obj.get("format") != FORMAT:
        raise FormatError(f"trust root: format must be {FORMAT!r}")
    version = require(obj, "version", int, "trust root")
    expires = require(obj, "expires", str, "trust root")
    parse_rfc3339(expires, "trust root expires")
    keys = tuple(_parse_key(k, i) for i, k in enumerate(require(obj, "keys", list, "trust root")))
    if len({k.public_key.key_id for k in keys}) != len(keys):
        raise FormatError("trust root: a key appears twice")
    if len({k.name for k in keys}) != len(keys):
        raise FormatError("trust root: two keys share a name")
    threshold = require(obj, "threshold", dict, "trust root")
    root = TrustRoot(version, expires, keys, threshold)
    check_thresholds(root)
    if version < 1:
        raise FormatError("trust root: version must be at least 1")
    return root


def check_thresholds(root: TrustRoot) -> None:
    """Every role has a threshold between 1 and the number of keys holding it."""
    exact_keys(root.threshold, set(ROLES), "trust root threshold")
    for role in ROLES:
        value = root.threshold.get(role)
        holders = sum(role in k.roles for k in root.keys)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FormatError(f"trust root: threshold for {role!r} must be a whole number >= 1")
        if role in ("root", "lists") and value > holders:
            raise FormatError(
                f"trust root: threshold {role}={value} but only {holders} key(s) hold that role"
            )


def trusted_comment(data: bytes) -> str:
    root = parse_trust_root(data)
    digest = hashlib.sha256(data).hexdigest()
    return f"kopir-trust version={root.version} expires={root.expires} sha256={digest}"


def sign_trust_root(data: bytes, key: SecretKey) -> Signature:
    return sign(key, data, trusted_comment(data))


def count_signers(
    data: bytes,
    signatures: Iterable[Signature],
    candidates: Sequence[TrustKey],
    comment: str,
    now: float,
) -> tuple[set[str], list[str]]:
    """Names of the distinct active ``candidates`` with a valid signature, and the problems."""
    by_id = {k.public_key.key_id: k for k in candidates}
    good: set[str] = set()
    problems: list[str] = []
    digest = hashlib.blake2b(data, digest_size=64).digest()
    for sig in signatures:
        key = by_id.get(sig.key_id)
        if key is None:
            problems.append(f"{sig.hex_id}: not a trusted key for this role")
        elif not key.active(now):
            problems.append(f"{key.name}: revoked {key.revoked}")
        elif sig.trusted_comment != comment:
            problems.append(f"{key.name}: trusted comment does not match the document")
        else:
            try:
                verify(key.public_key, sig, message=data, digest=digest)
                good.add(key.name)
            except VerificationError as exc:
                problems.append(f"{key.name}: {exc}")
    return good, problems


def require_threshold(
    root: TrustRoot,
    role: str,
    data: bytes,
    signatures: Iterable[Signature],
    comment: str,
    now: float,
    label: str,
) -> set[str]:
    """Names of the valid signers; ``threshold`` error naming the shortfall and each problem."""
    holders = [k for k in root.keys if role in k.roles]
    good, problems = count_signers(data, signatures, holders, comment, now)
    need = root.threshold[role]
    if len(good) < need:
        detail = f"{label}: {len(good)} of {need} required signatures valid, "
        detail += f"{need - len(good)} short"
        if problems:
            detail += " (" + "; ".join(problems) + ")"
        raise VerificationError("threshold", detail)
    return good


def _require_root_threshold(
    root: TrustRoot, data: bytes, signatures: Sequence[Signature], now: float, label: str
) -> None:
    require_threshold(root, "root", data, signatures, trusted_comment(data), now, label)


def verify_trust_root(
    data: bytes,
    signatures: Sequence[Signature],
    now: float,
    previous: TrustRoot | None = None,
    previous_data: bytes | None = None,
) -> TrustRoot:
    """Check a trust root's own threshold and, given the current root, the TUF rotation rule."""
    root = parse_trust_root(data)
    if now >= parse_rfc3339(root.expires, "expires"):
        raise VerificationError("expired", f"trust root v{root.version} expired {root.expires}")
    _require_root_threshold(root, data, signatures, now, f"version {root.version}")
    if previous is None:
        return root
    if root.version < previous.version:
        raise VerificationError(
            "rollback", f"version {root.version} is older than the trusted {previous.version}"
        )
    if root.version == previous.version:
        if previous_data is not None and previous_data != data:
            raise VerificationError(
                "conflict", f"two different trust roots both claim version {root.version}"
            )
        return root
    if root.version != previous.version + 1:
        raise VerificationError(
            "gap",
            f"version {root.version} cannot follow {previous.version} directly; "
            "verify each version in between",
        )
    _require_root_threshold(previous, data, signatures, now, f"previous version {previous.version}")
    return root
