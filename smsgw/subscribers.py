"""The subscriber store: who gets proxy links by SMS, encrypted at rest (DESIGN.md §6 smsgw).

Theory of operation
-------------------
One SQLite file in WAL mode. Each row of ``subscriber`` is one phone number:

- ``ref``: HMAC of the E.164 number under the index key (``NumberKey.ref``), the primary key.
  Looking a number up means normalising it and computing its ref; nothing is ever decrypted
  to search.
- ``number_ct``: the number under AES-256-GCM (``NumberKey.encrypt``), opened only by ``get``
  and ``iter_all`` when a message is about to be sent.
- ``language`` (kk, ru, en), ``pool`` (established: subscribed before a crisis; new),
  ``consent`` (where consent was given, free text capped at 200 characters), ``created`` and
  ``last_sent`` (unix seconds).

The key file is kept apart from the database (DESIGN.md §2, seizure): with the database alone
the numbers cannot be read, and refs cannot be reversed by trying every number. ``meta`` holds
the key's check value; a store opened with another key raises ``KeyFileError`` before anything
is written, so two keys' data can never be mixed in one file.

Deletion is meant to be real. ``secure_delete`` zeroes deleted records, and ``remove`` then
checkpoints the write-ahead log and truncates it, so a ``STOP`` leaves no copy in the ``-wal``
file. ``purge`` deletes every row, then ``VACUUM`` rebuilds the file and the log is truncated
again: afterwards no byte of an old record remains in the file.

Privacy of output. No number appears in a log line, an exception message or a repr: logs show
``short_ref`` (12 hex digits), ``Subscriber.number`` is left out of the repr, and import errors
give the line number and the reason only.

Import. ``import_csv`` reads ``number[,language[,pool]]`` rows (a header row, blank lines and
``#`` comments are skipped; ``;`` or tab may separate instead of ``,``) and adds the good rows in
one transaction, in batches, so 100,000 rows take seconds and a failure leaves the store as it
was. Adding a number that is already there updates its language, pool and consent.

A ``SubscriberStore`` owns one connection and is used from one thread; other processes may open
the same file at the same time (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from smsgw.errors import KeyFileError, SubscriberError
from smsgw.numbers import NumberKey, normalize
from smsgw.sqlite import immediate

if TYPE_CHECKING:
    import _csv

__all__ = [
    "LANGUAGES",
    "POOLS",
    "BadRow",
    "ImportReport",
    "Progress",
    "Subscriber",
    "SubscriberStore",
]

log = logging.getLogger(__name__)

LANGUAGES = ("kk", "ru", "en")
POOLS = ("established", "new")
MAX_CONSENT_CHARS = 200
SCHEMA_VERSION = 1
APPLICATION_ID = 0x6B6F7073
"""``PRAGMA application_id`` of a subscriber store ("kops"): no other database is taken for one."""

BATCH_ROWS = 1000
"""Rows per ``executemany`` call and per progress report during an import."""

Progress = Callable[[int, int], None]
"""``progress(lines_done, lines_total)``, called during an import."""

_REF = re.compile(r"[0-9a-f]{64}")
_SHOWABLE = re.compile(r"[A-Za-z][A-Za-z_-]{0,19}")
_COUNTABLE = ("language", "pool", "consent")
_COLUMNS = "ref, number_ct, language, pool, consent, created, last_sent"
_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE subscriber (
    ref TEXT PRIMARY KEY CHECK (length(ref) = 64),
    number_ct BLOB NOT NULL,
    language TEXT NOT NULL CHECK (language IN ('kk', 'ru', 'en')),
    pool TEXT NOT NULL CHECK (pool IN ('established', 'new')),
    consent TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_sent INTEGER
) WITHOUT ROWID""",
)
_UPSERT = """
INSERT INTO subscriber (ref, number_ct, language, pool, consent, created, last_sent)
VALUES (?, ?, ?, ?, ?, ?, NULL)
ON CONFLICT (ref) DO UPDATE
SET language = excluded.language, consent = excluded.consent,
    -- someone who subscribed before the crisis stays in the established pool when they
    -- sign up again during it: "new" is for numbers the censor may have just registered
    pool = CASE WHEN subscriber.pool = 'established' THEN 'established' ELSE excluded.pool END
"""

_Row = tuple[str, bytes, str, str, str, int]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscriber, with the number decrypted."""

    ref: str
    """The keyed hash of the number: the lookup key. Logs show its first 12 characters."""
    number: str = field(repr=False)
    """E.164. Never log it; it is left out of the repr."""
    language: str
    pool: str
    consent: str
    """Where consent was given, e.g. ``web-form 2026-01-03``."""
    created: int
    last_sent: int | None


class BadRow(NamedTuple):
    """A CSV row that was not imported: where and why, never the number."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``import_csv`` did."""

    rows: int
    """Data rows read (header, blank and comment lines are not counted)."""
    added: int
    """Numbers that were not in the store before."""
    updated: int
    """Good rows whose number was already there (or earlier in the file)."""
    bad: tuple[BadRow, ...]

    @property
    def rejected(self) -> int:
        return len(self.bad)


class SubscriberStore:
    """Encrypted subscribers in one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        key: NumberKey,
        *,
        default_region: str = "KZ",
        busy_timeout: float = 10.0,
    ) -> None:
        self._path = Path(path)
        self._key = key
        self._region = default_region
        self._db = _open(self._path, key, busy_timeout)

    def __repr__(self) -> str:
        return f"SubscriberStore({str(self._path)!r})"

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SubscriberStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- adding and removing -------------------------------------------------------------------

    def add(self, raw_number: str, language: str, pool: str, consent: str, now: float) -> str:
        """Add a number (any usual spelling) or update its language, pool and consent; its ref."""
        row = self._prepare(raw_number, language, pool, _consent(consent), now)
        with self._write():
            known = self._db.execute("SELECT 1 FROM subscriber WHERE ref = ?", row[:1]).fetchone()
            self._db.execute(_UPSERT, row)
        log.info("subscriber %s %s", row[0][:12], "updated" if known else "added")
        return row[0]

    def remove(self, raw_or_ref: str) -> bool:
        """Delete a subscriber (``STOP``), given a number or a ref; False if there was none."""
        ref = self._ref_of(raw_or_ref)
        with self._write():
            gone = self._db.execute("DELETE FROM subscriber WHERE ref = ?", (ref,)).rowcount > 0
        if gone:
            self._truncate_log()
            log.info("subscriber %s removed", ref[:12])
        return gone

    def mark_sent(self, ref: str, now: float) -> bool:
        """Record a message sent now; False if the subscriber is gone (a ``STOP`` came first)."""
        with self._write():
            cur = self._db.execute(
                "UPDATE subscriber SET last_sent = ? WHERE ref = ?", (int(now), _checked(ref))
            )
        return cur.rowcount > 0

    def mark_sent_many(self, refs: Iterable[str], now: float) -> int:
        """``mark_sent`` for many subscribers in one transaction; how many were still there."""
        rows = [(int(now), _checked(ref)) for ref in refs]
        with self._write():
            before = self._db.total_changes
            self._db.executemany("UPDATE subscriber SET last_sent = ? WHERE ref = ?", rows)
            return self._db.total_changes - before

    def purge(self) -> int:
        """Delete every subscriber and rebuild the file so no old record remains; how many."""
        with self._write():
            count = self._count()
            self._db.execute("DELETE FROM subscriber")
        with self._sql("VACUUM"):
            self._db.execute("VACUUM")
        if not self._truncate_log():
            raise SubscriberError(
                f"purge deleted {count} subscribers, but another process has {self._path} "
                "open, so old pages may remain in its -wal file: stop it and purge again"
            )
        log.info("subscriber store purged: %d subscribers deleted", count)
        return count

    # -- reading -------------------------------------------------------------------------------

    def get(self, ref: str) -> Subscriber:
        """The subscriber with this ref, number decrypted; ``SubscriberError`` if there is none."""
        with self._sql("get"):
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM subscriber WHERE ref = ?", (_checked(ref),)
            ).fetchone()
        if row is None:
            raise SubscriberError(f"no subscriber with ref {ref[:12]}")
        return self._subscriber(row)

    def iter_all(self) -> Iterator[Subscriber]:
        """Every subscriber, in ref order (which is no order a reader could learn from)."""
        after = ""
        while True:
            with self._sql("read"):
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM subscriber WHERE ref > ? ORDER BY ref LIMIT ?",
                    (after, BATCH_ROWS),
                ).fetchall()
            if not rows:
                return
            yield from (self._subscriber(row) for row in rows)
            after = rows[-1][0]

    def count(self) -> int:
        with self._sql("count"):
            return self._count()

    def count_by(self, field_name: str) -> dict[str, int]:
        """Subscribers per value of ``language``, ``pool`` or ``consent``."""
        if field_name not in _COUNTABLE:
            raise SubscriberError(
                f"cannot count by {_shown(field_name)}: use one of {', '.join(_COUNTABLE)}"
            )
        with self._sql("count"):
            rows = self._db.execute(
                f"SELECT {field_name}, count(*) FROM subscriber GROUP BY 1 ORDER BY 1"
            ).fetchall()
        return {str(value): int(n) for value, n in rows}

    # -- import --------------------------------------------------------------------------------

    def import_csv(
        self,
        path: str | Path,
        language_default: str,
        pool_default: str,
        consent: str,
        now: float,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Add every good ``number[,language[,pool]]`` row of a CSV file; see ``ImportReport``."""
        path = Path(path)
        defaults = (
            _choice(language_default, LANGUAGES, "language"),
            _choice(pool_default, POOLS, "pool"),
        )
        consent = _consent(consent)
        total = _count_lines(path)
        if progress is not None:
            progress(0, total)
        report = _Tally()
        with self._write():
            before = self._count()
            for batch in _batches(_records(path), BATCH_ROWS):
                rows = self._prepare_batch(batch, defaults, consent, now, report)
                self._db.executemany(_UPSERT, rows)
                if progress is not None:
                    progress(batch[-1][0], total)
            added = self._count() - before
        if progress is not None:
            progress(total, total)
        result = ImportReport(report.rows, added, report.good - added, tuple(report.bad))
        log.info(
            "imported %s: %d added, %d updated, %d rejected",
            path,
            result.added,
            result.updated,
            result.rejected,
        )
        return result

    def _prepare_batch(
        self,
        batch: list[tuple[int, list[str]]],
        defaults: tuple[str, str],
        consent: str,
        now: float,
        report: _Tally,
    ) -> list[_Row]:
        rows: list[_Row] = []
        for line, cells in batch:
            report.rows += 1
            try:
                rows.append(self._prepare_cells(cells, defaults, consent, now))
            except SubscriberError as exc:
                report.bad.append(BadRow(line, str(exc)))
                log.debug("line %d not imported: %s", line, exc)
        report.good += len(rows)
        return rows

    def _prepare_cells(
        self, cells: list[str], defaults: tuple[str, str], consent: str, now: float
    ) -> _Row:
        if len(cells) > 3:
            raise SubscriberError("too many columns (expected number[,language[,pool]])")
        language = cells[1] if len(cells) > 1 and cells[1] else defaults[0]
        pool = cells[2] if len(cells) > 2 and cells[2] else defaults[1]
        return self._prepare(cells[0], language, pool, consent, now)

    # -- helpers -------------------------------------------------------------------------------

    def _prepare(self, raw: str, language: str, pool: str, consent: str, now: float) -> _Row:
        e164 = normalize(raw, self._region)
        return (
            self._key.ref(e164),
            self._key.encrypt(e164),
            _choice(language, LANGUAGES, "language"),
            _choice(pool, POOLS, "pool"),
            consent,
            int(now),
        )

    def _ref_of(self, raw_or_ref: str) -> str:
        if _REF.fullmatch(raw_or_ref):
            return raw_or_ref
        return self._key.ref(normalize(raw_or_ref, self._region, check=False))

    def _subscriber(self, row: tuple[str, bytes, str, str, str, int, int | None]) -> Subscriber:
        ref, blob, language, pool, consent, created, last_sent = row
        return Subscriber(ref, self._key.decrypt(blob), language, pool, consent, created, last_sent)

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM subscriber").fetchone()[0])

    def _truncate_log(self) -> bool:
        """Copy the write-ahead log into the file and empty it; False if a reader prevented it."""
        with self._sql("checkpoint"):
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            log.debug("subscriber store %s: log not truncated, another reader is active", self)
        return not busy

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction: all of it is committed or none of it."""
        with self._sql("write"), immediate(self._db):
            yield

    @contextmanager
    def _sql(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            # SQLite's messages never hold bound values, so they cannot carry a number.
            raise SubscriberError(f"subscriber store {self._path}: {what} failed: {exc}") from exc


@dataclass(slots=True)
class _Tally:
    rows: int = 0
    good: int = 0
    bad: list[BadRow] = field(default_factory=list)


# -- opening -----------------------------------------------------------------------------------


def _open(path: Path, key: NumberKey, busy_timeout: float) -> sqlite3.Connection:
    """A connection to a store made with ``key``, creating the store if the file is new.

    An existing file is only read until it has proved to be a store for this key, so a wrong
    key or a wrong file leaves it exactly as it was.
    """
    _create_private(path)
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise SubscriberError(f"cannot open subscriber store {path}: {exc}") from exc
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not _tables(db):
            _initialise(db, key)
        _verify(db, path, key)
        for pragma in ("synchronous = FULL", "secure_delete = ON", "temp_store = MEMORY"):
            db.execute(f"PRAGMA {pragma}")
    except sqlite3.Error as exc:
        db.close()
        raise SubscriberError(f"cannot open subscriber store {path}: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 if there is none; SQLite gives its -wal the same."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise SubscriberError(f"cannot create subscriber store {path}: {exc.strerror}") from None


def _tables(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]


def _initialise(db: sqlite3.Connection, key: NumberKey) -> None:
    """Create the tables and record the key's check value in a new, empty file."""
    db.execute("PRAGMA journal_mode = WAL")
    with immediate(db):
        if not _tables(db):  # else another process created the store first: _verify decides
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('key_check', ?)", (key.check_value(),)
            )
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _verify(db: sqlite3.Connection, path: Path, key: NumberKey) -> None:
    app = db.execute("PRAGMA application_id").fetchone()[0]
    if app != APPLICATION_ID:
        raise SubscriberError(f"{path} is not a kopir subscriber store")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise SubscriberError(
            f"subscriber store {path} has format {version}; this kopir reads {SCHEMA_VERSION}"
        )
    row = db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
    if row is None or row[0] != key.check_value():
        raise KeyFileError(
            f"the subscriber key does not open {path}: it was created with another key file "
            "(nothing was changed; use the key file the store was made with)"
        )


# -- input checks ------------------------------------------------------------------------------


def _checked(ref: str) -> str:
    if not _REF.fullmatch(ref):
        raise SubscriberError("not a subscriber ref (expected 64 lower-case hex digits)")
    return ref


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    folded = value.strip().lower()
    if folded in allowed:
        return folded
    raise SubscriberError(f"unknown {what} {_shown(value)} (use {', '.join(allowed)})")


def _consent(text: str) -> str:
    folded = " ".join(text.split())  # one line, so it can never break a report's layout
    if not folded:
        raise SubscriberError("consent must say where it was given, e.g. 'web-form 2026-01-03'")
    return folded[:MAX_CONSENT_CHARS]


def _shown(value: str) -> str:
    """``value`` quoted if it is a short word; otherwise it might be a number, so hide it."""
    return repr(value.strip()) if _SHOWABLE.fullmatch(value.strip()) else "(value not shown)"


# -- CSV ---------------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each data row: trimmed, without header, blanks and comments."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            first = f.readline()
            reader = csv.reader(itertools.chain([first], f), delimiter=_delimiter(first))
            yield from _data_rows(reader)
    except csv.Error as exc:
        raise SubscriberError(f"{path} is not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror or exc}") from None


def _data_rows(reader: _csv.Reader) -> Iterator[tuple[int, list[str]]]:
    seen_data = False
    for record in reader:
        cells = [cell.strip() for cell in record]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].startswith("#"):
            continue
        if not seen_data and not any(char.isdigit() for char in cells[0]):
            seen_data = True  # a first row with no digit in its first cell is a header
            continue
        seen_data = True
        yield reader.line_num, cells


def _batches(items: Iterator[_T], size: int) -> Iterator[list[_T]]:
    """Lists of up to ``size`` items (``itertools.batched`` is Python 3.12)."""
    while batch := list(itertools.islice(items, size)):
        yield batch


def _delimiter(first_line: str) -> str:
    counts = {sep: first_line.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _count_lines(path: Path) -> int:
    lines, last = 0, b"\n"
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror or exc}") from None
    return lines + (last != b"\n")
