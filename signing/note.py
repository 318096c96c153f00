"""Signed notes and transparency-log checkpoints in the C2SP formats (sans-IO).

Theory of operation
-------------------
A *signed note* (https://c2sp.org/signed-note) is UTF-8 text ending in a newline, then a
blank line, then one or more signature lines ``— <key name> <base64(key id ‖ sig)>``
(U+2014 EM DASH). The last blank line in the message separates text from signatures,
so the text itself may contain blank lines. With Ed25519 the signature covers the text
bytes, final newline included, and the key id is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4].
A verifier key is written ``<name>+<hex key id>+<base64(0x01 ‖ pubkey)>``. The
reference implementation is golang.org/x/mod/sumdb/note; we follow its limits (at most
100 signatures) and produce byte-identical output.

A verifier looks only at signatures whose (name, key id) pair is the one it trusts and
ignores the rest, as the spec requires: other lines may be witnesses or rotated keys.

A *checkpoint* (https://c2sp.org/tlog-checkpoint) is the note text a log signs: the
origin line, the tree size in decimal, the base64 root hash, then optional extension
lines. ``Checkpoint.text()`` builds it and ``parse_checkpoint`` reads it back.

Parsers are strict and raise only FormatError: whatever they accept re-encodes to the
same bytes, so a note or checkpoint has a single spelling and nothing can hide in slack.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from signing.errors import FormatError, VerificationError

__all__ = [
    "MAX_SIGNATURES",
    "Checkpoint",
    "Note",
    "NoteSignature",
    "add_signature",
    "key_id",
    "parse_checkpoint",
    "parse_note",
    "parse_verifier_key",
    "sign_note",
    "verifier_key",
    "verify_note",
]

# The spec asks verifiers to accept at least 16; the Go reference stops at 100.
MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "
_ALG_ED25519 = b"\x01"
_PUBLIC_KEY_SIZE = 32
_KEY_ID_SIZE = 4
_HASH_SIZE = 32
# Checkpoint sizes are uint64 in every implementation we interoperate with.
_MAX_TREE_SIZE = 2**64 - 1
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


# --- keys ---------------------------------------------------------------------------------


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte key id SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public_key)[:4]."""
    _check_name(name)
    _check_public_key(public_key)
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + _ALG_ED25519 + public_key).digest()
    return digest[:_KEY_ID_SIZE]


def verifier_key(name: str, public_key: bytes) -> str:
    """Return the verifier key string ``<name>+<hex key id>+<base64(0x01 ‖ pubkey)>``."""
    kid = key_id(name, public_key)
    return f"{name}+{kid.hex()}+{_b64(_ALG_ED25519 + public_key)}"


def parse_verifier_key(s: str) -> tuple[str, bytes]:
    """Return (name, 32-byte Ed25519 public key) from a verifier key string."""
    # The name cannot contain '+', but the base64 key can: split twice only.
    parts = s.split("+", 2)
    if len(parts) != 3:
        raise FormatError(f"verifier key must look like name+keyid+key: {s[:80]!r}")
    name, hex_id, encoded = parts
    _check_name(name)
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise FormatError(f"verifier key id must be 8 lowercase hex digits, got {hex_id[:20]!r}")
    raw = _b64decode(encoded, "verifier public key")
    if len(raw) != 1 + _PUBLIC_KEY_SIZE or raw[:1] != _ALG_ED25519:
        raise FormatError("verifier key is not an Ed25519 key (0x01 followed by 32 bytes)")
    public_key = raw[1:]
    if key_id(name, public_key).hex() != hex_id:
        raise FormatError(f"verifier key id {hex_id} does not match name {name!r} and key")
    return name, public_key


def _check_name(name: str) -> None:
    """Key names are non-empty, without spaces, '+' or control characters (signed-note)."""
    if not name:
        raise FormatError("key name is empty")
    if "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise FormatError(f"key name {name[:80]!r} contains a space, '+' or a control character")
    _utf8(name, "key name")


def _check_public_key(public_key: bytes) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != _PUBLIC_KEY_SIZE:
        raise FormatError(f"an Ed25519 public key is {_PUBLIC_KEY_SIZE} bytes")


# --- notes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    """Key name, as written on the line."""
    key_id: bytes
    """The 4-byte key id that prefixes the signature."""
    signature: bytes
    """Signature bytes after the key id (64 for Ed25519)."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.key_id) != _KEY_ID_SIZE:
            raise FormatError(f"key id must be {_KEY_ID_SIZE} bytes, got {len(self.key_id)}")
        if not self.signature:
            raise FormatError(f"signature by {self.name!r} is empty")

    def line(self) -> str:
        """Return the signature line, newline included."""
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A note text and its signatures (verified or not: see ``verify_note``)."""

    text: str
    """The signed text; non-empty and ending in a newline."""
    signatures: tuple[NoteSignature, ...]
    """Signature lines in order; may be empty only before the first ``add_signature``."""

    def __post_init__(self) -> None:
        _check_text(self.text)
        if len(self.signatures) > MAX_SIGNATURES:
            raise FormatError(f"note has {len(self.signatures)} signatures; max {MAX_SIGNATURES}")

    def encode(self) -> bytes:
        """Return the signed note: text, blank line, signature lines."""
        if not self.signatures:
            raise FormatError("a note needs at least one signature to be encoded")
        lines = "".join(sig.line() for sig in self.signatures)
        return (self.text + "\n" + lines).encode("utf-8")


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``text`` as key ``name`` and return the whole signed note."""
    return add_signature(Note(text, ()), name, private_key).encode()


def add_signature(note: Note, name: str, private_key: Ed25519PrivateKey) -> Note:
    """Return ``note`` with a signature by (name, key) appended.

    An older signature by the same name and key id is dropped, as the Go reference
    does, so re-signing never leaves two lines for one key.
    """
    public_key = private_key.public_key().public_bytes_raw()
    kid = key_id(name, public_key)
    kept = tuple(s for s in note.signatures if (s.name, s.key_id) != (name, kid))
    new = NoteSignature(name, kid, private_key.sign(note.text.encode("utf-8")))
    return Note(note.text, (*kept, new))


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note strictly, without checking any signature."""
    message = _decode_text(data, "note")
    if _CONTROL.search(message):
        raise FormatError("note contains a control character other than newline")
    split = message.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith("\n"):
        raise FormatError("note must end with a newline after its last signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"note has {len(lines)} signature lines; at most {MAX_SIGNATURES}")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise FormatError(f"signature line must start with an em dash and space: {line[:60]!r}")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space:
        raise FormatError(f"signature line has no space between name and signature: {line[:60]!r}")
    raw = _b64decode(encoded, f"signature by {name[:40]!r}")
    if len(raw) <= _KEY_ID_SIZE:
        raise FormatError(f"signature by {name[:40]!r} is shorter than a key id")
    return NoteSignature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def verify_note(data: bytes | str, name: str, public_key: bytes) -> Note:
    """Parse ``data`` and check its signature(s) by the Ed25519 key (name, public_key).

    Signatures by other keys are ignored. Raises VerificationError("unknown-key") when
    the key did not sign, and VerificationError("bad-signature") when one of its
    signatures fails (stricter than Go, which checks only the first of duplicates).
    """
    note = parse_note(data)
    kid = key_id(name, public_key)
    mine = [s for s in note.signatures if s.name == name and s.key_id == kid]
    if not mine:
        # Name a few signers only: the list comes from untrusted input and can be long.
        signers = ", ".join(f"{s.name[:60]}+{s.key_id.hex()}" for s in note.signatures[:4])
        raise VerificationError("unknown-key", f"no signature by {name}+{kid.hex()}; has {signers}")
    key = Ed25519PublicKey.from_public_bytes(public_key)
    message = note.text.encode("utf-8")
    for sig in mine:
        try:
            key.verify(sig.signature, message)
        except InvalidSignature:
            raise VerificationError(
                "bad-signature", f"signature by {name}+{kid.hex()} does not match the note text"
            ) from None
    return note


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise FormatError("note text must be non-empty and end with a newline")
    if _CONTROL.search(text):
        raise FormatError("note text contains a control character other than newline")
    _utf8(text, "note text")


# --- checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint: the note text a log signs for one tree head."""

    origin: str
    """Log identity, e.g. ``example.org/kopir-log``; should match the signing key name."""
    size: int
    """Number of leaves in the tree."""
    root: bytes
    """RFC 9162 root hash of the tree, 32 bytes."""
    extensions: tuple[str, ...] = ()
    """Opaque extra lines; non-empty, and not recommended by the spec."""

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise FormatError(f"checkpoint size {self.size} is outside 0..2**64-1")
        if not isinstance(self.root, bytes) or len(self.root) != _HASH_SIZE:
            raise FormatError(f"checkpoint root hash must be {_HASH_SIZE} bytes")
        for line in self.extensions:
            _check_line(line, "checkpoint extension line")

    def text(self) -> str:
        """Return the note text: origin, size, base64 root, extensions; each with a newline."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse checkpoint note text (for instance ``verify_note(...).text``) strictly."""
    text = _decode_text(text, "checkpoint")
    if not text.endswith("\n"):
        raise FormatError("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise FormatError(f"checkpoint has {len(lines)} lines; it needs origin, size and root")
    origin, size, root = lines[:3]
    if not _DECIMAL.fullmatch(size):
        raise FormatError(f"checkpoint size must be decimal without leading zeros: {size[:40]!r}")
    root_bytes = _b64decode(root, "checkpoint root hash")
    return Checkpoint(origin, int(size), root_bytes, tuple(lines[3:]))


def _check_line(line: str, what: str) -> None:
    if not line:
        raise FormatError(f"{what} is empty")
    if "\n" in line or _CONTROL.search(line):
        raise FormatError(f"{what} {line[:60]!r} contains a newline or control character")
    _utf8(line, what)


# --- encoding helpers ---------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(encoded: str, what: str) -> bytes:
    """Decode standard padded base64, accepting only the canonical spelling."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not valid base64: {encoded[:60]!r}") from None
    if not raw or _b64(raw) != encoded:
        raise FormatError(f"{what} is not canonical base64: {encoded[:60]!r}")
    return raw


def _decode_text(data: bytes | str, what: str) -> str:
    """Return ``data`` as a str that is known to be valid UTF-8."""
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{what} is not valid UTF-8 (byte {e.start})") from None
    _utf8(data, what)
    return data


def _utf8(s: str, what: str) -> bytes:
    """Encode ``s``; a str with lone surrogates cannot be sent or signed, so reject it."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError(f"{what} is not valid Unicode (position {e.start})") from None
