"""The list builder: probe results in, the next signed list version out (DESIGN.md §5.4, §6).

Theory of operation
-------------------
:func:`build_list` is the pure core. It takes the configured relays, the prober's results, the
bytes of the current ``list.json`` (or ``None``) and ``now``, and decides:

- ``first``: there is no list yet, so version 1 is made;
- ``changed``: the healthy set differs from the current list's, so version N+1 is made;
- ``renew``: nothing changed but the current list expires within ``renew_before``;
- ``unchanged``: otherwise; no new version, so verifiers and the log see no churn.

The healthy set is compared on what a client dials (type, server, port, secret, domain) and on
what the operator configured (ports tried, tags); ``rtt_ms`` and ``last_ok`` change on every
probe and do not count. Entries are sorted by server, port and secret, so the same inputs give
the same bytes. A new version's ``previous`` is the SHA-256 of the current list's exact bytes.
A round in which no relay is healthy publishes nothing: it is far more often the publisher's
own network that is down than every relay at once, and an empty list would strand people.

:class:`ListStore` keeps the versions on disk: ``versions/<N>.json`` (history) and
``list.json`` (the current one), each written to a temporary file, synced and renamed, so a
crash at any point leaves ``list.json`` as the previous version, whole. Renaming ``list.json``
is the one step that publishes; its signatures and the copies in ``versions/`` follow, and a
crash between those steps is completed by the next build (:meth:`ListStore.settle`), so
``versions/`` only ever holds versions that were published. A lock file keeps two builders from
interleaving. :func:`publish` runs one round: build, store, sign if a key is
given (an offline key signs later with ``kopir sign list``), and append to the log if one is
given.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxylist.errors import BuildError
from proxylist.model import ProbeResult, Relay
from signing import (
    FormatError,
    ListDocument,
    LogStore,
    SecretKey,
    Signature,
    SigningError,
    load_signature,
    parse_list,
    save_signature,
    sign_list,
    signature_files,
    signature_name,
)
from signing.canonical import parse_rfc3339, rfc3339

LIST_NAME = "list.json"
ENTRY_TYPE = "proxy"
# Fields of an entry that change on every probe; the rest decides whether the list changed.
_VOLATILE = ("last_ok", "rtt_ms")
# Test hook: when set to a file path, the writer creates that file and waits before renaming
# list.json into place, so a test can kill the process exactly mid-write.
PAUSE_ENV = "KOPIR_TEST_PAUSE_BEFORE_RENAME"
_PAUSE_LIMIT = 60.0
_VERSION_FILE = re.compile(r"([1-9][0-9]*)\.json")
_COMMENT_SHA = re.compile(r"sha256=([0-9a-f]{64})")

Reason = Literal["first", "changed", "renew", "unchanged"]


@dataclass(frozen=True)
class ListPolicy:
    """What the operator decided about list versions ([publisher] in the config)."""

    publisher: str
    lifetime: float
    """Seconds from ``issued`` to ``expires``."""
    renew_before: float
    """Re-issue an unchanged list this many seconds before it expires."""

    def __post_init__(self) -> None:
        if not self.publisher.strip():
            raise BuildError("the publisher name is empty; set [publisher] name")
        if self.lifetime <= 0:
            raise BuildError("the list lifetime must be positive; set [publisher] list_lifetime")
        if not 0 <= self.renew_before < self.lifetime:
            raise BuildError(
                "renew_before must be shorter than the list lifetime, or every build would "
                "re-issue the list; set [publisher] renew_before below list_lifetime"
            )


@dataclass(frozen=True)
class Build:
    """The builder's decision for one round."""

    reason: Reason
    document: ListDocument
    """The new version, or the current one when ``reason`` is ``unchanged``."""
    data: bytes
    """``document``'s exact bytes."""
    healthy: int
    relays: int

    @property
    def changed(self) -> bool:
        return self.reason != "unchanged"


# -- the pure core --------------------------------------------------------------------------


def entry_for(result: ProbeResult) -> dict[str, Any]:
    """The list entry of a healthy relay: its first working port, every port tried."""
    relay = result.relay
    rtt = result.rtt_ms
    return {
        "domain": relay.domain,
        "last_ok": rfc3339(result.at),
        "port": result.working_ports[0],
        "ports_tried": list(result.ports_tried),
        "rtt_ms": None if rtt is None else round(rtt),
        "secret": relay.secret_hex,
        "server": relay.server,
        "tags": list(relay.tags),
        "type": ENTRY_TYPE,
    }


def healthy_entries(
    relays: Sequence[Relay], results: Sequence[ProbeResult]
) -> list[dict[str, Any]]:
    """Entries for the configured relays whose probe passed, in a fixed order.

    A result for a relay that is not configured (or configured differently) is ignored: the
    config says what may be published, the prober only says what works.
    """
    names = [r.name for r in relays]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise BuildError(f"relay names must be distinct; repeated: {', '.join(twice)}")
    configured = set(relays)
    entries = [entry_for(r) for r in results if r.ok and r.relay in configured]
    unique = {_identity(e): e for e in entries}
    return sorted(unique.values(), key=lambda e: (e["server"], e["port"], e["secret"]))


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        (k, tuple(v) if isinstance(v, list) else v)
        for k, v in sorted(entry.items())
        if k not in _VOLATILE
    )


def _same_set(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    return Counter(map(_identity, a)) == Counter(map(_identity, b))


def build_list(
    relays: Sequence[Relay],
    results: Sequence[ProbeResult],
    current: bytes | None,
    policy: ListPolicy,
    now: float,
) -> Build:
    """Decide whether a new version is due and make it; see the module docstring."""
    entries = healthy_entries(relays, results)
    old = _parse_current(current)
    if not entries:
        kept = f"version {old.version} is kept" if old else "no list is written"
        raise BuildError(
            f"none of the {len(relays)} relays is healthy, so {kept}; check this host's network "
            "first (kopir list probe), then the relays"
        )
    if old is not None and current is not None:
        reason = _reason(old, entries, policy, now)
        if reason == "unchanged":
            return Build("unchanged", old, current, len(entries), len(relays))
        previous: str | None = hashlib.sha256(current).hexdigest()
    else:
        reason, previous = "first", None
    doc = ListDocument(
        publisher=policy.publisher,
        version=old.version + 1 if old else 1,
        issued=rfc3339(now),
        expires=rfc3339(now + policy.lifetime),
        proxies=tuple(entries),
        previous=previous,
    )
    return Build(reason, doc, doc.encode(), len(entries), len(relays))


def _parse_current(current: bytes | None) -> ListDocument | None:
    if current is None:
        return None
    try:
        return parse_list(current)
    except FormatError as exc:
        raise BuildError(
            f"the current list is damaged ({exc}); restore list.json from versions/"
        ) from None


def _reason(
    old: ListDocument, entries: list[dict[str, Any]], policy: ListPolicy, now: float
) -> Reason:
    if old.publisher != policy.publisher or not _same_set(old.proxies, entries):
        return "changed"
    if now >= parse_rfc3339(old.expires, "expires") - policy.renew_before:
        return "renew"
    return "unchanged"


# -- the store ------------------------------------------------------------------------------


class ListStore:
    """``list.json`` and ``versions/<N>.json`` in one directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LIST_NAME
        self.versions_dir = self.dir / "versions"

    def current(self) -> bytes | None:
        """The current list's bytes, or ``None`` before the first version."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            if self.versions():
                raise BuildError(
                    f"{self.path} is missing but {self.versions_dir} holds versions; copy the "
                    "newest published one back to list.json (versions must keep increasing)"
                ) from None
            return None
        except OSError as exc:
            raise BuildError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def versions(self) -> list[int]:
        """The version numbers in the history, ascending (temporary files are not versions)."""
        if not self.versions_dir.is_dir():
            return []
        found = (_VERSION_FILE.fullmatch(p.name) for p in self.versions_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def version_path(self, version: int) -> Path:
        return self.versions_dir / f"{version}.json"

    def signature_paths(self) -> list[Path]:
        return list(signature_files(self.dir / LIST_NAME).values())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's lock; a second builder fails at once instead of interleaving."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BuildError(f"another list build is running in {self.dir}") from None
            self._remove_leftovers()
            yield

    def _remove_leftovers(self) -> None:
        """Temporary files of a build that was killed; safe to drop under the lock."""
        for folder in (self.dir, self.versions_dir):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def publish(self, data: bytes) -> None:
        """Make ``data`` the current list. Only this rename publishes; all else is repairable."""
        write_file(self.path, data)

    def settle(self, data: bytes, signatures: Sequence[Signature]) -> None:
        """Finish (or repair) the current version ``data``: put ``signatures`` beside
        ``list.json``, drop signatures made for other bytes, and copy the list and its
        signatures into ``versions/``. Every step is idempotent, so a round cut short by a
        crash is completed by the next one."""
        for sig in signatures:
            save_signature(_sig_path(self.path, sig), sig)
        digest = hashlib.sha256(data).hexdigest()
        for path in self.signature_paths():
            if _signed_digest(path) != digest:
                path.unlink(missing_ok=True)
        history = self.version_path(parse_list(data).version)
        if not history.exists() or history.read_bytes() != data:
            write_file(history, data)
        for path in self.signature_paths():
            kept = history.with_name(history.name + path.name[len(LIST_NAME) :])
            if not kept.exists():
                write_file(kept, path.read_bytes())


def _sig_path(document: Path, signature: Signature) -> Path:
    return document.with_name(signature_name(document.name, signature))


def _signed_digest(path: Path) -> str | None:
    """The list hash a signature's trusted comment names, or ``None`` if it names none."""
    try:
        comment = load_signature(path).trusted_comment
    except SigningError:
        return None
    match = _COMMENT_SHA.search(comment)
    return match.group(1) if match else None


def write_file(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync the directory: all of ``data`` or the old file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if path.name == LIST_NAME:
            _pause_for_test()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _pause_for_test() -> None:
    signal_file = os.environ.get(PAUSE_ENV)
    if not signal_file:
        return
    Path(signal_file).write_text("paused before renaming list.json\n")
    time.sleep(_PAUSE_LIMIT)  # the test kills us long before; bounded all the same


# -- one round ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did."""

    build: Build
    path: Path
    """The current ``list.json``."""
    signed_by: tuple[str, ...]
    """Key ids (hex) whose signatures now sit beside ``list.json`` for this version."""
    log_index: int | None
    """The version's entry in the transparency log, when a log was given."""


def publish(
    store: ListStore,
    relays: Sequence[Relay],
    results: Sequence[ProbeResult],
    policy: ListPolicy,
    now: float,
    *,
    key: SecretKey | None = None,
    log: LogStore | None = None,
) -> Published:
    """Build, store, sign and log one round; an unchanged list is re-signed and re-logged only
    if an earlier round was cut short before doing so (both steps are idempotent)."""
    with store.lock():
        build = build_list(relays, results, store.current(), policy, now)
        signatures = [sign_list(build.data, key)] if key else []
        if build.changed:
            store.publish(build.data)
        store.settle(build.data, signatures)
        index = log.append([build.data])[0][0] if log else None
        signed = tuple(sorted({load_signature(p).hex_id for p in store.signature_paths()}))
    return Published(build, store.path, signed, index)
