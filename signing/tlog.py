"""Merkle tree hashing, proofs and their text form for the transparency log (sans-IO).

Theory of operation
-------------------
The log is an RFC 9162 Merkle tree (https://www.rfc-editor.org/rfc/rfc9162#section-2.1).
Each entry is hashed once into a *leaf hash*, SHA-256(0x00 ‖ entry); two subtrees join
as SHA-256(0x01 ‖ left ‖ right). The domain-separation bytes stop a leaf from passing as
an inner node. A tree of n > 1 leaves splits at k, the largest power of two smaller than
n: the left subtree is always perfect, and only the right edge of the tree is ragged.

Everything here works on leaf hashes, never on entries, so the log stores one hash per
entry and can build proofs without re-reading old entries:

- ``root_hash`` is MTH (§2.1.1);
- ``inclusion_proof`` is PATH (§2.1.3.1) and ``verify_inclusion`` is §2.1.3.2;
- ``consistency_proof`` is PROOF (§2.1.4.1) and ``verify_consistency`` is §2.1.4.2.

Builders walk the split points with (lo, hi) offsets instead of copying slices, and
hash each subtree bottom-up level by level: carrying an unpaired last node up a level
gives exactly the RFC's split-at-a-power-of-two shape. The verifiers follow the RFC's
bit-shifting algorithms step by step, so they never need the tree itself.

Proofs travel as a small line-based text (``kopir-inclusion-proof/1`` and
``kopir-consistency-proof/1``). Its parsers are strict: a text is accepted only if
re-serialising it gives back the same bytes, so a proof has exactly one spelling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from signing.errors import FormatError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "ConsistencyProof",
    "InclusionProof",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "parse_consistency_proof",
    "parse_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
# A tree of up to 2**64 leaves is at most 64 levels deep, so no proof needs more hashes.
MAX_PROOF_HASHES = 64
# Sizes are uint64 on the wire in every C2SP/RFC 9162 implementation we interoperate with.
_MAX_SIZE = 2**64 - 1

_INCLUSION_HEADER = "kopir-inclusion-proof/1"
_CONSISTENCY_HEADER = "kopir-consistency-proof/1"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


# --- hashing ------------------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 9162 leaf hash SHA-256(0x00 ‖ entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 inner node hash SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """Return MTH over ``leaves``, a sequence of leaf hashes (not entries)."""
    return _range_root(leaves, 0, len(leaves))


def _split(n: int) -> int:
    """Return the largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """Return MTH(D[lo:hi]) by pairing nodes level by level."""
    if lo == hi:
        return EMPTY_ROOT
    level = [leaves[i] for i in range(lo, hi)]
    for h in level:
        _check_hash(h, "leaf hash")
    while len(level) > 1:
        # An odd node out is carried up unchanged; this is what makes the left subtree
        # of every split the perfect one, as RFC 9162 requires.
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


# --- proof builders ---------------------------------------------------------------------


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Return PATH(index, D[0:size]) over the leaf hashes ``leaves``, leaf level first."""
    if not 0 <= size <= len(leaves):
        raise FormatError(f"tree size {size} is outside 0..{len(leaves)} (leaves available)")
    if not 0 <= index < size:
        raise FormatError(f"leaf index {index} is outside 0..{size - 1} for a tree of {size}")
    siblings: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            siblings.append(_range_root(leaves, mid, hi))
            hi = mid
        else:
            siblings.append(_range_root(leaves, lo, mid))
            lo = mid
    # Collected from the root down; the proof lists them from the leaf up.
    siblings.reverse()
    return siblings


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[0:new_size]) over the leaf hashes ``leaves``."""
    if not 0 < old_size <= new_size <= len(leaves):
        raise FormatError(
            f"consistency proof needs 0 < old ({old_size}) <= new ({new_size}) "
            f"<= leaves available ({len(leaves)})"
        )
    nodes: list[bytes] = []
    lo, hi, m = 0, new_size, old_size
    old_is_whole_subtree = True  # SUBPROOF's flag b: the old root is known to the verifier
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            nodes.append(_range_root(leaves, lo + k, hi))
            hi = lo + k
        else:
            nodes.append(_range_root(leaves, lo, lo + k))
            lo, m = lo + k, m - k
            old_is_whole_subtree = False
    if not old_is_whole_subtree:
        nodes.append(_range_root(leaves, lo, hi))
    nodes.reverse()
    return nodes


# --- verifiers ----------------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` sits at ``index`` of the tree of ``size`` with ``root``.

    Follows RFC 9162 §2.1.3.2. Raises FormatError for malformed arguments and
    VerificationError("bad-proof") when the proof does not lead to ``root``.
    """
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    _check_proof_hashes(proof)
    if not 0 <= index < size:
        raise FormatError(f"leaf index {index} is outside 0..{size - 1} for a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("bad-proof", "inclusion proof has too many hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Skip the levels where this node is a right-edge node with no sibling.
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("bad-proof", "inclusion proof has too few hashes")
    if r != root:
        raise VerificationError("bad-proof", f"inclusion proof for leaf {index} gives another root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    Follows RFC 9162 §2.1.4.2. A proof from size 0 is malformed (FormatError); from
    old_size == new_size only the empty proof with equal roots is valid.
    """
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    _check_proof_hashes(proof)
    if not 0 < old_size <= new_size:
        raise FormatError(f"consistency needs 0 < old size ({old_size}) <= new ({new_size})")
    if old_size == new_size:
        _verify_same_size(old_root, new_root, proof)
        return
    if not proof:
        raise VerificationError("bad-proof", "consistency proof is empty for a grown tree")
    old_calc, new_calc = _consistency_roots(old_size, new_size, old_root, proof)
    if old_calc != old_root:
        raise VerificationError("bad-proof", "consistency proof disagrees with the old root")
    if new_calc != new_root:
        raise VerificationError("bad-proof", "consistency proof disagrees with the new root")


def _verify_same_size(old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    if proof:
        raise VerificationError("bad-proof", "a proof between equal sizes must be empty")
    if old_root != new_root:
        raise VerificationError("bad-proof", "two roots for the same tree size (split view)")


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """Run RFC 9162 §2.1.4.2 steps 2-6 and return the (old, new) roots the proof implies."""
    path = list(proof)
    # A power-of-two old tree is a whole subtree of the new one, so PROOF leaves it out.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("bad-proof", "consistency proof has too many hashes")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("bad-proof", "consistency proof has too few hashes")
    return fr, sr


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise FormatError(f"{what} must be {HASH_SIZE} bytes, got {size}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise FormatError(f"proof has {len(proof)} hashes; at most {MAX_PROOF_HASHES} allowed")
    for i, h in enumerate(proof):
        _check_hash(h, f"proof hash #{i}")


# --- text form ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    """An inclusion proof as served by the log (``kopir-inclusion-proof/1``)."""

    index: int
    """Position of the leaf, counted from 0."""
    size: int
    """Size of the tree the proof is for."""
    hashes: tuple[bytes, ...]
    """PATH(index, D[0:size]), leaf level first."""

    def __post_init__(self) -> None:
        _check_count(self.size, "size")
        if not 0 <= self.index < self.size:
            raise FormatError(f"index {self.index} is outside 0..{self.size - 1}")
        _check_proof_hashes(self.hashes)

    def text(self) -> str:
        """Return the canonical text form; ``parse_inclusion_proof`` reverses it."""
        head = [_INCLUSION_HEADER, f"index {self.index}", f"size {self.size}"]
        return _join_lines(head, self.hashes)


@dataclass(frozen=True)
class ConsistencyProof:
    """A consistency proof as served by the log (``kopir-consistency-proof/1``)."""

    old_size: int
    """Size of the older tree; at least 1."""
    new_size: int
    """Size of the newer tree; at least ``old_size``."""
    hashes: tuple[bytes, ...]
    """PROOF(old_size, D[0:new_size])."""

    def __post_init__(self) -> None:
        _check_count(self.new_size, "new size")
        if not 0 < self.old_size <= self.new_size:
            raise FormatError(f"old size {self.old_size} is outside 1..{self.new_size}")
        _check_proof_hashes(self.hashes)

    def text(self) -> str:
        """Return the canonical text form; ``parse_consistency_proof`` reverses it."""
        head = [_CONSISTENCY_HEADER, f"old {self.old_size}", f"new {self.new_size}"]
        return _join_lines(head, self.hashes)


def parse_inclusion_proof(text: str | bytes) -> InclusionProof:
    """Parse the ``kopir-inclusion-proof/1`` text form strictly; raise FormatError if bad."""
    lines = _split_lines(text, _INCLUSION_HEADER)
    index = _parse_field(lines[1], "index")
    size = _parse_field(lines[2], "size")
    return InclusionProof(index, size, _parse_hashes(lines[3:]))


def parse_consistency_proof(text: str | bytes) -> ConsistencyProof:
    """Parse the ``kopir-consistency-proof/1`` text form strictly; raise FormatError if bad."""
    lines = _split_lines(text, _CONSISTENCY_HEADER)
    old = _parse_field(lines[1], "old")
    new = _parse_field(lines[2], "new")
    return ConsistencyProof(old, new, _parse_hashes(lines[3:]))


def _check_count(value: int, what: str) -> None:
    if not 0 <= value <= _MAX_SIZE:
        raise FormatError(f"{what} {value} is outside 0..2**64-1")


def _join_lines(head: list[str], hashes: Sequence[bytes]) -> str:
    lines = head + [base64.b64encode(h).decode("ascii") for h in hashes]
    return "".join(line + "\n" for line in lines)


def _split_lines(text: str | bytes, header: str) -> list[str]:
    """Return the lines of ``text`` (without newlines) after checking framing and header."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as e:
            raise FormatError(f"proof is not ASCII text (byte {e.start})") from None
    if not text.endswith("\n"):
        raise FormatError("proof text must end with a newline")
    lines = text[:-1].split("\n")
    if lines[0] != header:
        raise FormatError(f"proof must start with the line {header!r}, got {lines[0][:40]!r}")
    if len(lines) < 3:
        raise FormatError(f"proof has {len(lines)} lines; the header needs 3")
    if len(lines) - 3 > MAX_PROOF_HASHES:
        raise FormatError(f"proof has {len(lines) - 3} hashes; at most {MAX_PROOF_HASHES}")
    return lines


def _parse_field(line: str, key: str) -> int:
    """Parse ``"<key> <canonical decimal>"``."""
    prefix = key + " "
    if not line.startswith(prefix):
        raise FormatError(f"expected a line {prefix!r}<number>, got {line[:40]!r}")
    digits = line[len(prefix) :]
    # The length bound in the pattern keeps int() away from Python's huge-number limit.
    if not _DECIMAL.fullmatch(digits):
        raise FormatError(f"{key} must be a decimal number without leading zeros: {digits[:40]!r}")
    return int(digits)


def _parse_hashes(lines: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(_decode_hash(line, i) for i, line in enumerate(lines))


def _decode_hash(line: str, i: int) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"proof hash #{i} is not base64: {line[:60]!r}") from None
    # Re-encoding rejects non-canonical spellings (e.g. stray bits before the padding).
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise FormatError(f"proof hash #{i} is not a canonical base64 {HASH_SIZE}-byte hash")
    return raw
