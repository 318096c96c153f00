"""Per-recipient distribution: each recipient gets its own ``k`` relays (DESIGN.md §6 "proxylist").

If everyone got the whole list, a censor would subscribe once and block every relay. Instead
each recipient (``+77011234567``, ``tg:<user id>``, ``poster:<batch>``) sees a few relays,
chosen so that the choice is stable, balanced, and unpredictable without the distribution
secret.

The keyed hash ring
    Every relay of a pool owns :data:`VNODES` points on a 64-bit ring, at
    ``HMAC-SHA256(secret, "relay" label ‖ epoch ‖ name ‖ vnode)``. A recipient sits at
    ``HMAC-SHA256(secret, "recipient" label ‖ epoch ‖ recipient id)`` and gets the ``k``
    distinct relays that come next clockwise, nearest first. A pool with fewer than ``k``
    relays gives every recipient all of them; an empty pool is an error. Positions are the
    first 8 bytes of the MAC, big-endian. Many points per relay even out the arcs: with 50
    relays and ``k = 2`` every relay carries within ±30% of the mean load.

    Every MAC input starts with a length-prefixed label naming its purpose, then fixed-width
    or length-prefixed fields, so no two different (purpose, epoch, id) triples are the same
    byte string. The epoch is ``floor(now / epoch_seconds)``: within an epoch an answer never
    changes (asking again teaches a censor nothing); across epochs every position moves.

Pools
    ``established`` recipients (subscribed before a crisis) and ``new`` ones draw from
    disjoint relay pools, so an account that appears during a crisis, quite possibly a
    censor's, never sees an established relay. The caller says which relays are in which pool
    (from config tags) and which of them are healthy.

The record (:class:`Distributor`)
    A SQLite file (WAL) remembers, per *cohort*, the last set given and, per relay, which
    cohorts got it in which epoch and how often. A cohort is a keyed hash of the recipient
    under its own label, so the file never holds a phone number, yet a burned relay points
    back (:meth:`Distributor.exposed`) to the recipients that could have leaked it.

    Rate limit: a recipient gets at most one *new* set per ``interval``. When its set would
    change (new epoch, a relay went down) sooner than that, it gets its previous set again,
    even if a relay in it has since gone down: a censor who burns a relay does not
    learn a replacement by asking again.

The ring lookup is pure and fast (one HMAC from precomputed inner/outer SHA-256 states, one
``bisect``, one table read: about 2 µs); the record adds a transaction per batch.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxylist.distsecret import check_secret
from proxylist.errors import DistributionError

VNODES = 512
"""Ring points per relay; enough for ±30% load with 50 relays and k = 2 (see the tests)."""
COHORT_HEX = 24
"""Hex digits kept of the cohort MAC (96 bits: no collisions among billions of recipients)."""
MAX_RECIPIENT_BYTES = 256
_LABEL_RELAY = b"kopir-distribution-relay-v1"
_LABEL_RECIPIENT = b"kopir-distribution-recipient-v1"
_LABEL_COHORT = b"kopir-distribution-cohort-v1"
_APPLICATION_ID = 0x6B6F6473  # "kods": kopir distribution store
_SCHEMA_VERSION = 1
_SQL_CHUNK = 500  # parameters per IN (...) query, well under SQLite's limit


# --- keyed hashing ----------------------------------------------------------------------------


def _field(data: bytes) -> bytes:
    """A length-prefixed field: 4 bytes of length, then the bytes."""
    return len(data).to_bytes(4, "big") + data


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


class _Keyed:
    """HMAC-SHA256 (RFC 2104) under one key, with a fixed message prefix absorbed once.

    The inner and outer SHA-256 states are computed once; each MAC then costs two state copies
    and two short hashes. ``hmac.HMAC.copy`` does the same work with more Python around it.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._inner.update(prefix)

    def digest(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _encode_id(recipient: str) -> bytes:
    """The recipient id's UTF-8 bytes, refusing what cannot be a recipient."""
    try:
        data = recipient.encode("utf-8")
    except UnicodeEncodeError:
        raise DistributionError(
            f"recipient id {recipient!r} is not valid text; pass a phone number, tg:<id> or"
            " poster:<batch>"
        ) from None
    if not data or len(data) > MAX_RECIPIENT_BYTES:
        raise DistributionError(
            f"recipient id must be 1 to {MAX_RECIPIENT_BYTES} bytes, got {len(data)};"
            " pass a phone number, tg:<id> or poster:<batch>"
        )
    return data


def epoch_of(now: float, epoch_seconds: float) -> int:
    """The epoch number at Unix time ``now``: ``floor(now / epoch_seconds)``."""
    if not epoch_seconds > 0 or not math.isfinite(epoch_seconds):
        raise DistributionError(
            f"the epoch length must be a positive number of seconds, got {epoch_seconds}"
        )
    if not 0 <= now < 2**62 or not math.isfinite(now):
        raise DistributionError(f"time {now} is not a Unix time; check the system clock")
    return math.floor(now / epoch_seconds)


# --- the ring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    """One pool's ring for one epoch: sorted points and, per ``k``, a successor table."""

    epoch: int
    relays: tuple[str, ...]
    """The relay names, sorted; ``owners`` index into it."""
    positions: tuple[int, ...]
    """Every ring point, ascending."""
    owners: tuple[int, ...]
    """``owners[i]`` is the relay that owns ``positions[i]``."""
    _point: _Keyed = field(repr=False, compare=False)
    _tables: dict[int, tuple[tuple[str, ...], ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def build(cls, secret: bytes, relays: Iterable[str], epoch: int, vnodes: int = VNODES) -> Ring:
        """The ring of ``relays`` (names) for ``epoch``; an empty pool is an error at lookup."""
        check_secret(secret)
        if vnodes < 1 or epoch < 0:
            raise DistributionError(
                f"a ring needs vnodes >= 1 and epoch >= 0, got {vnodes}, {epoch}"
            )
        names = tuple(sorted(_unique(relays)))
        mac = _Keyed(secret, _field(_LABEL_RELAY) + _u64(epoch))
        points = sorted(
            (int.from_bytes(mac.digest(_field(name.encode()) + v.to_bytes(4, "big"))[:8]), i)
            for i, name in enumerate(names)
            for v in range(vnodes)
        )
        return cls(
            epoch=epoch,
            relays=names,
            positions=tuple(p for p, _ in points),
            owners=tuple(i for _, i in points),
            _point=_Keyed(secret, _field(_LABEL_RECIPIENT) + _u64(epoch)),
        )

    def position(self, recipient: str) -> int:
        """Where ``recipient`` sits on this ring."""
        return int.from_bytes(self._point.digest(_field(_encode_id(recipient)))[:8])

    def assign(self, recipient: str, k: int) -> tuple[str, ...]:
        """The ``k`` distinct relays next clockwise from ``recipient``, nearest first.

        With fewer than ``k`` relays in the pool, all of them (in ring order).
        """
        table = self._tables.get(k) or self._table(k)
        return table[bisect.bisect_right(self.positions, self.position(recipient)) % len(table)]

    def assign_many(self, recipients: Iterable[str], k: int) -> list[tuple[str, ...]]:
        """:meth:`assign` for each recipient, in order."""
        table = self._tables.get(k) or self._table(k)
        positions, point, size = self.positions, self._point.digest, len(table)
        return [
            table[
                bisect.bisect_right(positions, int.from_bytes(point(_field(_encode_id(r)))[:8]))
                % size
            ]
            for r in recipients
        ]

    def _table(self, k: int) -> tuple[tuple[str, ...], ...]:
        """For each ring point, the ``k`` distinct relays from it onward (built once per k)."""
        if k < 1:
            raise DistributionError(f"k must be at least 1 relay per recipient, got {k}")
        if not self.relays:
            raise DistributionError("the pool has no healthy relays; bring one up or add one")
        want, size = min(k, len(self.relays)), len(self.owners)
        table = []
        for start in range(size):
            chosen: dict[int, None] = {}
            step = start
            while len(chosen) < want:
                chosen[self.owners[step % size]] = None
                step += 1
            table.append(tuple(self.relays[i] for i in chosen))
        self._tables[k] = tuple(table)
        return self._tables[k]


def _unique(relays: Iterable[str]) -> list[str]:
    names = list(relays)
    for name in names:
        if not isinstance(name, str) or not name or not name.isprintable():
            raise DistributionError(f"relay name {name!r} must be non-empty printable text")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DistributionError(f"relay names {twice} appear more than once; names must be unique")
    return names


# --- pools ------------------------------------------------------------------------------------


def check_pools(pools: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """The pools as sorted name tuples, refusing a relay that sits in two pools.

    A relay in both ``established`` and ``new`` would show an established relay to the
    accounts that appear during a crisis, which is what pools exist to prevent.
    """
    checked: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for pool, relays in pools.items():
        if not isinstance(pool, str) or not pool or not pool.isprintable():
            raise DistributionError(f"pool name {pool!r} must be non-empty printable text")
        checked[pool] = tuple(sorted(_unique(relays)))
        for name in checked[pool]:
            if name in owner:
                raise DistributionError(
                    f"relay {name!r} is in both pools {owner[name]!r} and {pool!r};"
                    " a relay belongs to one pool, fix its tags"
                )
            owner[name] = pool
    return checked


# --- the record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """The relays one recipient was given."""

    cohort: str
    """The recipient's keyed hash, as recorded."""
    pool: str
    epoch: int
    relays: tuple[str, ...]
    """Relay names, nearest on the ring first."""
    limited: bool = False
    """True when the rate limit returned the previous set instead of a new one."""


@dataclass(frozen=True)
class Exposure:
    """One cohort that was given a relay in one epoch."""

    cohort: str
    epoch: int
    pool: str
    count: int
    """How many times the relay was handed to this cohort in this epoch."""
    first: float
    last: float


@dataclass(frozen=True)
class ExposureReport:
    """Who could have leaked ``relay``: every cohort that was given it."""

    relay: str
    entries: tuple[Exposure, ...]

    @property
    def cohorts(self) -> tuple[str, ...]:
        """The distinct cohorts, sorted."""
        return tuple(sorted({e.cohort for e in self.entries}))

    @property
    def epochs(self) -> tuple[int, ...]:
        return tuple(sorted({e.epoch for e in self.entries}))

    @property
    def total(self) -> int:
        """How many times the relay was handed out in all."""
        return sum(e.count for e in self.entries)


@dataclass(frozen=True)
class _Last:
    """A cohort's last new set and when it was given."""

    pool: str
    epoch: int
    relays: tuple[str, ...]
    given: float


def _decide(
    last: _Last | None, fresh: tuple[str, ...], pool: str, now: float, interval: float
) -> tuple[tuple[str, ...], bool]:
    """The set to hand out and whether the rate limit chose it (pure; see the module doc).

    A pool change always gets the fresh set: the old set's relays belong to the other pool.
    """
    if last is None or last.relays == fresh or last.pool != pool:
        return fresh, False
    if now - last.given < interval:
        return last.relays, True
    return fresh, False


_SCHEMA = (
    """CREATE TABLE latest (
        cohort TEXT PRIMARY KEY, pool TEXT NOT NULL, epoch INTEGER NOT NULL,
        relays TEXT NOT NULL, given REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE given (
        relay TEXT NOT NULL, cohort TEXT NOT NULL, epoch INTEGER NOT NULL, pool TEXT NOT NULL,
        count INTEGER NOT NULL, first REAL NOT NULL, last REAL NOT NULL,
        PRIMARY KEY (relay, cohort, epoch, pool)) WITHOUT ROWID""",
)
_UPSERT_LATEST = (
    "INSERT INTO latest (cohort, pool, epoch, relays, given) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (cohort) DO UPDATE SET pool = excluded.pool, epoch = excluded.epoch,"
    " relays = excluded.relays, given = excluded.given"
)
_UPSERT_GIVEN = (
    "INSERT INTO given (relay, cohort, epoch, pool, count, first, last)"
    " VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (relay, cohort, epoch, pool)"
    " DO UPDATE SET count = count + 1, last = excluded.last"
)


class Distributor:
    """Hands out per-recipient relay sets and records them (by cohort) in a SQLite file.

    ``pools`` maps a pool name to the names of its *healthy* relays; call :meth:`set_pools`
    when health changes. Rings are built once per (pool, epoch) and kept.
    """

    def __init__(
        self,
        path: Path,
        secret: bytes,
        pools: Mapping[str, Iterable[str]],
        *,
        k: int = 2,
        epoch_seconds: float = 7 * 24 * 3600,
        interval: float = 24 * 3600,
        busy_timeout: float = 5.0,
    ) -> None:
        check_secret(secret)
        if k < 1 or not interval >= 0:
            raise DistributionError(f"k must be >= 1 and interval >= 0, got k={k}, {interval}")
        epoch_of(0, epoch_seconds)  # checks the epoch length
        self.k, self.epoch_seconds, self.interval = k, epoch_seconds, interval
        self._secret = secret
        self._cohort = _Keyed(secret, _field(_LABEL_COHORT))
        self._pools = check_pools(pools)
        self._rings: dict[tuple[str, int], Ring] = {}
        self._db = _open(Path(path), busy_timeout)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Distributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_pools(self, pools: Mapping[str, Iterable[str]]) -> None:
        """Replace the healthy relays of every pool (after a probe round)."""
        checked = check_pools(pools)
        if checked != self._pools:
            self._pools = checked
            self._rings.clear()

    def ring(self, pool: str, now: float) -> Ring:
        """The ring of ``pool`` for the epoch at ``now``."""
        if pool not in self._pools:
            known = ", ".join(sorted(self._pools)) or "none"
            raise DistributionError(f"unknown pool {pool!r}; configured pools: {known}")
        epoch = epoch_of(now, self.epoch_seconds)
        ring = self._rings.get((pool, epoch))
        if ring is None:
            if not self._pools[pool]:
                raise DistributionError(
                    f"pool {pool!r} has no healthy relays; bring one up or move one into it"
                )
            ring = Ring.build(self._secret, self._pools[pool], epoch)
            self._rings = {key: r for key, r in self._rings.items() if key[1] >= epoch - 1}
            self._rings[pool, epoch] = ring
        return ring

    def cohort(self, recipient: str) -> str:
        """The keyed hash that stands for ``recipient`` in the record."""
        return self._cohort.digest(_field(_encode_id(recipient))).hex()[:COHORT_HEX]

    def assign(self, recipient: str, pool: str, now: float) -> Assignment:
        """The relays for ``recipient`` at ``now``, recorded; rate-limited (see the module doc)."""
        return self.assign_many([recipient], pool, now)[0]

    def assign_many(self, recipients: Iterable[str], pool: str, now: float) -> list[Assignment]:
        """:meth:`assign` for many recipients in one transaction, in order."""
        ring = self.ring(pool, now)
        ids = list(recipients)
        fresh = ring.assign_many(ids, self.k)
        cohorts = [self.cohort(r) for r in ids]
        with _immediate(self._db, "record assignments"):
            last = _read_last(self._db, cohorts)
            out, latest, given = self._decide_all(cohorts, fresh, last, pool, ring.epoch, now)
            self._db.executemany(_UPSERT_LATEST, latest)
            self._db.executemany(_UPSERT_GIVEN, given)
        return out

    def _decide_all(
        self,
        cohorts: Sequence[str],
        fresh: Sequence[tuple[str, ...]],
        last: dict[str, _Last],
        pool: str,
        epoch: int,
        now: float,
    ) -> tuple[list[Assignment], list[tuple[object, ...]], list[tuple[object, ...]]]:
        """Decide each recipient in order; a repeat in the batch sees the earlier decision."""
        out: list[Assignment] = []
        latest: list[tuple[object, ...]] = []
        given: list[tuple[object, ...]] = []
        for cohort, relays in zip(cohorts, fresh, strict=True):
            previous = last.get(cohort)
            chosen, limited = _decide(previous, relays, pool, now, self.interval)
            if previous is None or (previous.pool, previous.relays) != (pool, chosen):
                last[cohort] = _Last(pool, epoch, chosen, now)
                latest.append((cohort, pool, epoch, json.dumps(chosen), now))
            given.extend((relay, cohort, epoch, pool, now, now) for relay in chosen)
            out.append(Assignment(cohort, pool, epoch, chosen, limited))
        return out, latest, given

    def exposed(self, relay: str) -> ExposureReport:
        """Every cohort that was given ``relay``, per epoch and pool, with counts."""
        rows = self._db.execute(
            "SELECT cohort, epoch, pool, count, first, last FROM given WHERE relay = ?"
            " ORDER BY epoch, cohort, pool",
            (relay,),
        ).fetchall()
        return ExposureReport(relay, tuple(Exposure(*row) for row in rows))


def _read_last(db: sqlite3.Connection, cohorts: Sequence[str]) -> dict[str, _Last]:
    unique = list(dict.fromkeys(cohorts))
    found: dict[str, _Last] = {}
    for at in range(0, len(unique), _SQL_CHUNK):
        chunk = unique[at : at + _SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        query = f"SELECT cohort, pool, epoch, relays, given FROM latest WHERE cohort IN ({marks})"
        for cohort, pool, epoch, relays, given in db.execute(query, chunk):
            found[cohort] = _Last(pool, epoch, tuple(json.loads(relays)), given)
    return found


# --- SQLite -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction, so two processes never both read and then write."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise DistributionError(f"cannot {what} in the distribution record: {exc}") from exc


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """The record at ``path`` (created 0600 if new), in WAL mode with its tables."""
    _create_private(path)
    try:
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise DistributionError(f"cannot open distribution record {path}: {exc}") from exc
    try:
        _prepare_when_free(db, path, time.monotonic() + busy_timeout)
    except sqlite3.Error as exc:
        db.close()
        raise DistributionError(
            f"cannot open distribution record {path}: {exc}; is it a kopir distribution record?"
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _prepare_when_free(db: sqlite3.Connection, path: Path, deadline: float) -> None:
    """``_prepare``, tried again while another opener keeps the file busy, until ``deadline``.
    SQLite answers "database is locked" without waiting when waiting could deadlock, as when
    two openers of a new file both switch it to WAL (CI saw it once, 16 threads opening a new
    record at once); once the statement has ended and its lock is gone, a retry goes through.
    Each step is safe to repeat."""
    while True:
        try:
            _prepare(db, path)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours (or empty) before changing anything, then WAL and the tables."""
    if _is_foreign(db):
        raise DistributionError(
            f"{path} is not a kopir distribution record; set the record path to a new file"
        )
    if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise DistributionError(
            f"distribution record {path} cannot use WAL mode; put it on a local file system"
        )
    db.execute("PRAGMA synchronous = NORMAL")
    with _immediate(db, "create tables"):
        if db.execute("PRAGMA application_id").fetchone()[0] == _APPLICATION_ID:
            return  # another process created it since we looked
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _is_foreign(db: sqlite3.Connection) -> bool:
    """Neither an empty file nor a record of this schema version. One statement reads all
    three, so one snapshot: another process may be creating the tables right now, and reads
    in turn could see its tables but not yet its application_id."""
    app, version, tables = db.execute(
        "SELECT (SELECT application_id FROM pragma_application_id),"
        " (SELECT user_version FROM pragma_user_version),"
        " (SELECT count(*) FROM sqlite_schema)"
    ).fetchone()
    return (app, version) != (_APPLICATION_ID, _SCHEMA_VERSION) and bool(app or tables)


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 if there is none; SQLite gives its -wal the same."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DistributionError(
            f"cannot create distribution record {path}: {exc.strerror}; check the directory"
        ) from None
