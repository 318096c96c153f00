"""The transparency log on disk: append-only entries, signed checkpoints, proofs, audits.

Layout of a log directory::

    log.json              {"origin": ..., "key": "log.key"}   (origin = the note key name)
    log.key, log.pub      the log's minisign key pair (made on creation unless one is given)
    entries/000000000007  entry 7, byte for byte (one published list.json)
    leaves                the RFC 9162 leaf hashes, 32 bytes each, in order
    checkpoints/000000000008.note   every checkpoint this log has signed, by tree size

Appending writes the entry file first and then appends its leaf hash with fsync; the size of
the log is the number of whole hashes in ``leaves``, so a crash in between loses nothing that
was reported as appended, and a torn hash at the end is cut off on the next open.

The Merkle maths is in ``signing.tlog`` and the note format in ``signing.note``; this module
only does the file system and ties them together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from signing import note, strictjson, tlog
from signing.canonical import canonical_json
from signing.errors import FormatError, SigningError, VerificationError
from signing.fileio import read_bytes, write_atomic
from signing.keyfiles import generate_key_pair, load_public_key, load_secret_key
from signing.minisign import PublicKey, SecretKey

HASH = tlog.HASH_SIZE


class LogError(SigningError):
    """The log directory is missing, damaged or inconsistent."""


def _parse_meta(data: bytes) -> tuple[str, str]:
    """``(origin, key)`` from ``log.json``; ``FormatError`` unless both are sound strings."""
    meta = strictjson.loads_object(data)
    extra = sorted(set(meta) - {"key", "origin"})
    if extra:
        raise FormatError(f"unknown field {extra[0][:40]!r}")
    for name in ("origin", "key"):
        if not isinstance(meta.get(name), str):
            got = "missing" if name not in meta else "not a string"
            raise FormatError(f"field {name!r} is {got}")
    origin, key = meta["origin"], meta["key"]
    try:
        note.key_id(origin, bytes(32))  # the origin is the log's note key name
    except FormatError as exc:
        raise FormatError(f"origin: {exc}") from None
    if "\0" in key or Path(key).name in ("", ".", ".."):
        raise FormatError(f"key {key[:80]!r} does not name the log's secret key file")
    return origin, key


@dataclass(frozen=True)
class Finding:
    """One problem ``audit`` found."""

    kind: str
    """``rewritten-entry``, ``inconsistent``, ``split-view``, ``bad-checkpoint``..."""
    detail: str


@dataclass
class AuditReport:
    size: int
    root: bytes
    checkpoints: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class LogStore:
    """One log directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        meta_path = self.dir / "log.json"
        if not meta_path.exists():
            raise LogError(f"{self.dir} is not a kopir log (no log.json); append to create one")
        data = read_bytes(meta_path, "log metadata")
        try:
            self.origin, key = _parse_meta(data)
        except FormatError as exc:
            raise LogError(f"{meta_path} is damaged: {exc}") from None
        self.key_path = self.dir / key
        self._leaves = self._read_leaves()

    @classmethod
    def create(cls, directory: Path, origin: str, key_path: Path | None = None) -> LogStore:
        """Make a new, empty log. Without ``key_path`` a log key pair is generated in it."""
        directory = Path(directory)
        if (directory / "log.json").exists():
            raise LogError(f"{directory} already holds a log")
        note.key_id(origin, bytes(32))  # validates the name early
        (directory / "entries").mkdir(parents=True, exist_ok=True)
        (directory / "checkpoints").mkdir(exist_ok=True)
        if key_path is None:
            generate_key_pair(directory, "log", None)
            key_ref = "log.key"
        else:
            key_ref = str(Path(key_path).resolve())
        (directory / "leaves").touch()
        meta = canonical_json({"key": key_ref, "origin": origin})
        write_atomic(directory / "log.json", meta)
        return cls(directory)

    @classmethod
    def open_or_create(cls, directory: Path, origin: str, key_path: Path | None) -> LogStore:
        if (Path(directory) / "log.json").exists():
            return cls(directory)
        return cls.create(directory, origin, key_path)

    # -- reading -------------------------------------------------------------------------

    def _read_leaves(self) -> list[bytes]:
        path = self.dir / "leaves"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LogError(f"cannot read {path}: {exc.strerror}") from exc
        whole = len(data) - len(data) % HASH
        return [data[i : i + HASH] for i in range(0, whole, HASH)]

    @property
    def size(self) -> int:
        return len(self._leaves)

    @property
    def leaves(self) -> Sequence[bytes]:
        return self._leaves

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise LogError(f"the log has {self.size} entries, not {size}")
        return tlog.root_hash(self._leaves[:size])

    def _entry_path(self, index: int) -> Path:
        return self.dir / "entries" / f"{index:012d}"

    def entry(self, index: int) -> bytes:
        if not 0 <= index < self.size:
            raise LogError(f"no entry {index}: the log has {self.size} entries")
        return read_bytes(self._entry_path(index), "log entry")

    def index_of(self, entry: bytes) -> int | None:
        leaf = tlog.leaf_hash(entry)
        try:
            return self._leaves.index(leaf)
        except ValueError:
            return None

    def public_key(self) -> PublicKey:
        return load_public_key(self.key_path.with_suffix(".pub"))

    # -- writing -------------------------------------------------------------------------

    def append(self, entries: Iterable[bytes]) -> list[tuple[int, bool]]:
        """Append each entry; returns (index, added). An entry already logged is not re-added."""
        results: list[tuple[int, bool]] = []
        for data in entries:
            existing = self.index_of(data)
            if existing is not None:
                results.append((existing, False))
                continue
            index = self.size
            write_atomic(self._entry_path(index), data)
            leaf = tlog.leaf_hash(data)
            self._truncate_torn_tail()
            with open(self.dir / "leaves", "ab") as out:
                out.write(leaf)
                out.flush()
                os.fsync(out.fileno())
            self._leaves.append(leaf)
            results.append((index, True))
        return results

    def _truncate_torn_tail(self) -> None:
        path = self.dir / "leaves"
        if path.stat().st_size != self.size * HASH:
            os.truncate(path, self.size * HASH)

    def checkpoint(self, key: SecretKey | None = None) -> bytes:
        """Sign a checkpoint of the current tree, remember it, and return the signed note."""
        key = key or load_secret_key(self.key_path)
        text = note.Checkpoint(self.origin, self.size, self.root()).text()
        signed = note.sign_note(text, self.origin, key.signer)
        path = self.dir / "checkpoints" / f"{self.size:012d}.note"
        if path.exists():
            old = note.parse_note(read_bytes(path, "checkpoint"))
            if old.text != text:
                raise LogError(
                    f"refusing to sign: a checkpoint of size {self.size} with another root "
                    f"already exists ({path}); the log was rewritten"
                )
        write_atomic(path, signed)
        return signed

    # -- proofs --------------------------------------------------------------------------

    def inclusion(self, index: int, size: int | None = None) -> tlog.InclusionProof:
        size = self.size if size is None else size
        hashes = tlog.inclusion_proof(self._leaves, index, size)
        return tlog.InclusionProof(index, size, tuple(hashes))

    def consistency(self, old_size: int, new_size: int | None = None) -> tlog.ConsistencyProof:
        new_size = self.size if new_size is None else new_size
        hashes = tlog.consistency_proof(self._leaves, old_size, new_size)
        return tlog.ConsistencyProof(old_size, new_size, tuple(hashes))

    def stored_checkpoints(self) -> list[tuple[Path, bytes]]:
        folder = self.dir / "checkpoints"
        return [(p, read_bytes(p, "checkpoint")) for p in sorted(folder.glob("*.note"))]

    # -- auditing ------------------------------------------------------------------------

    def audit(self, public: PublicKey, extra: Sequence[tuple[str, bytes]] = ()) -> AuditReport:
        """Recompute the tree from the entries and check every checkpoint against it.

        ``extra`` are checkpoints from elsewhere (an auditor's memory, a witness), as
        (label, signed note) pairs.
        """
        recomputed = self._recompute_leaves()
        report = AuditReport(len(recomputed), tlog.root_hash(recomputed))
        for index, (stored, actual) in enumerate(zip(self._leaves, recomputed, strict=True)):
            if stored != actual:
                report.findings.append(
                    Finding("rewritten-entry", f"entry {index} no longer matches its leaf hash")
                )
        seen: dict[int, tuple[bytes, str]] = {}
        notes = [(str(p), d) for p, d in self.stored_checkpoints()] + list(extra)
        for label, data in notes:
            report.checkpoints += 1
            checkpoint = self._checked_checkpoint(label, data, public, report)
            if checkpoint is None:
                continue
            other = seen.setdefault(checkpoint.size, (checkpoint.root, label))
            if other[0] != checkpoint.root:
                report.findings.append(
                    Finding(
                        "split-view",
                        f"{label} and {other[1]} both sign size {checkpoint.size} "
                        "with different roots",
                    )
                )
            self._check_consistent(label, checkpoint, recomputed, report)
        return report

    def _recompute_leaves(self) -> list[bytes]:
        leaves = []
        for index in range(self.size):
            try:
                leaves.append(tlog.leaf_hash(self.entry(index)))
            except SigningError:
                leaves.append(bytes(HASH))  # missing entry: mismatches its stored hash
        return leaves

    def _checked_checkpoint(
        self, label: str, data: bytes, public: PublicKey, report: AuditReport
    ) -> note.Checkpoint | None:
        try:
            parsed = note.verify_note(data, self.origin, public.key)
            return note.parse_checkpoint(parsed.text)
        except (FormatError, VerificationError) as exc:
            report.findings.append(Finding("bad-checkpoint", f"{label}: {exc}"))
            return None

    def _check_consistent(
        self,
        label: str,
        checkpoint: note.Checkpoint,
        leaves: Sequence[bytes],
        report: AuditReport,
    ) -> None:
        """The checkpoint must be a prefix of the entries as they are now."""
        if checkpoint.origin != self.origin:
            report.findings.append(Finding("bad-checkpoint", f"{label}: origin differs"))
            return
        size = len(leaves)
        if checkpoint.size > size:
            report.findings.append(
                Finding("inconsistent", f"{label} has size {checkpoint.size}, log has {size}")
            )
            return
        if checkpoint.size == 0:
            ok = checkpoint.root == tlog.EMPTY_ROOT
        else:
            proof = tlog.consistency_proof(leaves, checkpoint.size, size)
            try:
                tlog.verify_consistency(
                    checkpoint.size, size, checkpoint.root, tlog.root_hash(leaves), proof
                )
                ok = True
            except (VerificationError, FormatError):
                ok = False
        if not ok:
            report.findings.append(
                Finding(
                    "inconsistent",
                    f"{label} (size {checkpoint.size}) is not a prefix of the log's entries: "
                    "an earlier entry was rewritten",
                )
            )
