"""What the public routes serve: files from the data directory, log entries and proofs.

Theory of operation
-------------------
Everything public is already on disk, written by the publisher: the trust root and its
signatures, ``lists/list.json`` and ``lists/versions/<N>.json`` with theirs, the transparency
log and its signed checkpoint in ``public/``. :class:`DataDir` maps a request's names onto
those files and reads them; it never builds a path from request text. A name is accepted only
if it matches a strict pattern (``<N>.json``, ``.<KEYID>.minisig`` with minisign's upper-case
hex key id), and is then joined to a fixed directory, so ``..``, slashes and NULs never reach
the file system. A missing file is :class:`NotPublished` (404) with what would make it exist.

Log proofs are JSON, with hashes in standard base64 (as in the checkpoint and the
``kopir-inclusion-proof/1`` text)::

    GET /log/proof/inclusion?index=I&size=S       (size defaults to the log's size)
    {"index": I, "size": S, "leaf_hash": "...", "root": "...", "hashes": ["...", ...]}

    GET /log/proof/consistency?old=M&new=N        (new defaults to the log's size)
    {"old": M, "new": N, "old_root": "...", "new_root": "...", "hashes": ["...", ...]}

``leaf_hash`` is SHA-256(0x00 ‖ entry I), ``root`` the RFC 9162 root of the first S entries;
``hashes`` are RFC 9162's PATH and PROOF, as ``signing.tlog.verify_inclusion`` and
``verify_consistency`` take them. A client checks ``root`` against a signed checkpoint of size
S (``/log/checkpoint``) before trusting a proof. ``&format=text`` gives the same proof in the
``kopir-inclusion-proof/1`` / ``kopir-consistency-proof/1`` text that ``kopir log`` reads.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import signing
from kopir.config import Config
from proxylist import ListStore
from signing import tlog

MAX_INDEX = 2**63 - 1
_COUNT = re.compile(r"0|[1-9][0-9]{0,18}")
_KEY_ID = r"[0-9A-F]{1,16}"
TEXT = "text/plain; charset=utf-8"
SIGNATURE = re.compile(rf"\.({_KEY_ID})\.minisig")
VERSION = re.compile(rf"([1-9][0-9]{{0,9}})\.json(?:\.({_KEY_ID})\.minisig)?")


class BadRequest(ValueError):
    """A parameter is missing or malformed (400); the message says which and what is allowed."""


class NotPublished(LookupError):
    """The thing asked for does not exist (404); the message says why."""


def count(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    """A non-negative whole number from the query, written without sign or leading zeros."""
    text = params.get(name)
    if text is None:
        if default is None:
            raise BadRequest(f"give {name}=N, a whole number from 0")
        return default
    if not _COUNT.fullmatch(text) or int(text) > MAX_INDEX:
        raise BadRequest(f"{name} must be a whole number from 0 to {MAX_INDEX}, got {text[:40]!r}")
    return int(text)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class File:
    data: bytes
    content_type: str


class DataDir:
    """The published files of one data directory (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.trust = config.in_data(config.signing.trust)
        self.lists = ListStore(config.in_data(config.publisher.dir))
        self.log_dir = config.in_data(config.log.dir)
        self.checkpoint_path = config.data_dir / "public" / "checkpoint"

    # -- files ---------------------------------------------------------------------------

    def trust_file(self, suffix: str = "") -> File:
        """``trust.json`` (``suffix`` empty) or one of its signatures (``.<KEYID>.minisig``)."""
        return self._signed(self.trust, suffix, "no trust root yet; kopir run makes one")

    def list_file(self, suffix: str = "") -> File:
        hint = "no list yet; kopir run publishes one after its first probe round"
        return self._signed(self.lists.path, suffix, hint)

    def version_file(self, name: str) -> File:
        match = VERSION.fullmatch(name)
        if not match:
            raise NotPublished(f"no such version file {name[:60]!r}: names are <N>.json")
        path = self.lists.versions_dir / name
        if match.group(2) is None:
            return File(_read(path, f"no list version {match.group(1)} here"), "application/json")
        return File(_read(path, f"no signature {name} here"), TEXT)

    def checkpoint(self) -> File:
        hint = "no signed checkpoint yet; kopir run signs one every [log] checkpoint_interval"
        return File(_read(self.checkpoint_path, hint), TEXT)

    def _signed(self, path: Path, suffix: str, hint: str) -> File:
        if not suffix:
            return File(_read(path, hint), "application/json")
        if not SIGNATURE.fullmatch(suffix):
            raise NotPublished(f"no such file: signatures are {path.name}.<KEYID>.minisig")
        name = path.name + suffix
        return File(_read(path.with_name(name), f"no signature {name}"), TEXT)

    def list_summary(self) -> signing.ListDocument | None:
        try:
            return signing.parse_list(self.lists.path.read_bytes())
        except (OSError, signing.SigningError):
            return None

    def list_signers(self) -> tuple[str, ...]:
        names = (
            p.name[len(self.lists.path.name) + 1 : -len(".minisig")]
            for p in self.lists.signature_paths()
        )
        return tuple(sorted(names))

    # -- the log -------------------------------------------------------------------------

    def log(self) -> signing.LogStore:
        if not (self.log_dir / "log.json").exists():
            raise NotPublished("no transparency log yet; kopir run creates it")
        try:
            return signing.LogStore(self.log_dir)
        except signing.SigningError as exc:
            raise NotPublished(f"the log cannot be read now: {exc}") from None

    def log_size(self) -> int | None:
        try:
            return (self.log_dir / "leaves").stat().st_size // tlog.HASH_SIZE
        except OSError:
            return None

    def entry(self, index_text: str) -> File:
        index = count({"index": index_text}, "index")
        log = self.log()
        if index >= log.size:
            raise NotPublished(
                f"no entry {index}: the log has {log.size} entries (0-{log.size - 1})"
            )
        return File(log.entry(index), "application/octet-stream")


def _read(path: Path, hint: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotPublished(hint) from None
    except OSError as exc:
        raise NotPublished(f"{hint} ({exc.strerror})") from None


# -- proofs -------------------------------------------------------------------------------


def inclusion(log: signing.LogStore, params: Mapping[str, str]) -> dict[str, Any]:
    _not_empty(log)
    size = count(params, "size", log.size)
    index = count(params, "index")
    if not 0 < size <= log.size:
        raise BadRequest(f"size must be 1-{log.size} (the log's size), got {size}")
    if index >= size:
        raise BadRequest(f"index must be below size ({size}), got {index}")
    proof = log.inclusion(index, size)
    return {
        "index": index,
        "size": size,
        "leaf_hash": b64(log.leaves[index]),
        "root": b64(log.root(size)),
        "hashes": [b64(h) for h in proof.hashes],
        "text": proof.text(),
    }


def consistency(log: signing.LogStore, params: Mapping[str, str]) -> dict[str, Any]:
    _not_empty(log)
    new = count(params, "new", log.size)
    old = count(params, "old")
    if not 0 < new <= log.size:
        raise BadRequest(f"new must be 1-{log.size} (the log's size), got {new}")
    if not 0 < old <= new:
        raise BadRequest(f"old must be 1-{new} (new), got {old}")
    proof = log.consistency(old, new)
    return {
        "old": old,
        "new": new,
        "old_root": b64(log.root(old)),
        "new_root": b64(log.root(new)),
        "hashes": [b64(h) for h in proof.hashes],
        "text": proof.text(),
    }


def _not_empty(log: signing.LogStore) -> None:
    if log.size == 0:
        raise NotPublished("the log has no entries yet, so there is nothing to prove")


def proof_body(proof: dict[str, Any], params: Mapping[str, str]) -> File:
    """The proof as JSON, or as the ``kopir-*-proof/1`` text with ``format=text``."""
    text = proof.pop("text")
    form = params.get("format", "json")
    if form == "text":
        return File(text.encode("ascii"), TEXT)
    if form != "json":
        raise BadRequest(f"format must be json or text, got {form[:40]!r}")
    return File(json.dumps(proof, indent=1).encode() + b"\n", "application/json")
