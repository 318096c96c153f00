"""The durable SMS queue: one SQLite file in WAL mode, sans-clock (DESIGN.md §6 smsgw, "Queue").

Theory of operation
-------------------
Each row of ``message`` is one SMS segment to one recipient. It moves through these states,
and every other move raises ``QueueError`` naming the message id and both states::

    queued ──claim──▶ sending ──accepted──▶ accepted ──receipt──▶ delivered | failed | expired
      │  ▲              │ │
      │  └───retry──────┘ └──fail──▶ failed          (recover: sending ──▶ queued)
      └──expire──▶ expired

Idempotency. ``(campaign, recipient_ref, part)`` is UNIQUE. Enqueueing an existing key returns
the existing id and changes nothing, so a distributor that crashed half-way simply runs its
campaign again. ``enqueue_many`` adds a whole batch in one transaction.

Claiming. ``claim`` takes up to ``limit`` queued messages whose ``not_before`` has come, oldest
first, marks them ``sending``, counts the attempt and opens an ``attempt`` row, all in one
``BEGIN IMMEDIATE`` transaction, so two workers can never claim the same message. Messages past
``expires_at`` are never claimed; ``expire`` moves them to ``expired``.

Crash semantics: at least once. A message is in ``sending`` from its claim until the worker
commits ``accepted``, ``retry`` or ``fail``. ``recover``, called on start-up, puts every
``sending`` message back to ``queued`` and leaves every other state alone. A crash after the
provider accepted a message but before ``accepted()`` was committed therefore sends that message
again: duplicates are at most the in-flight window (the messages claimed and not yet settled),
never the whole queue. ``recover`` assumes that no worker is running: run one worker per file.

Durability. The connection runs ``synchronous=NORMAL``: a commit survives the process being
killed, but the newest commits may roll back on power loss or an OS crash. WAL loses only a
suffix of commits and never tears the file, and every earlier state of a message leads back to
it being sent (a lost ``claim``/``accepted``/``fail``/``retry`` leaves it ``queued`` or
``sending``, which ``recover`` requeues: it is sent again; a lost receipt leaves it ``accepted``),
so at-least-once holds without an fsync per message. The exception is a lost *enqueue*, which
would drop a message, so ``enqueue`` and ``enqueue_many`` commit with ``synchronous=FULL`` (one
fsync per batch).

Concurrency. A ``Queue`` owns one connection and is used from one thread. Other processes may
open the same file at the same time (the CLI reads counts while the worker runs): WAL lets
readers run beside the writer, every write starts with ``BEGIN IMMEDIATE`` so writers queue on
the lock instead of failing to upgrade, and ``busy_timeout`` says how long they wait.

Early receipts. A provider may report the delivery before the worker has recorded that it
accepted the message: an SMSC sends the receipt right after ``submit_sm_resp``, while the worker
still waits for the rest of its window, and a webhook can beat the API's answer. A receipt that
no ``accepted`` message waits for is kept (``early_receipt``, for ``EARLY_RECEIPT_TTL``), and
``accepted`` settles its message at once if that receipt came after the message was claimed.

Provider ids. SMSCs spell one id differently in ``submit_sm_resp`` and in the delivery receipt
(case, leading zeros), so ``normalize_provider_id`` (in ``smsgw.queuemodel``, with the states
and row types) is applied before storing and before matching.

Privacy. The queue never sees a phone number. A row holds ``recipient_ref`` (the subscriber's
keyed hash, given by the caller) and ``recipient_ct`` (the encrypted number, an opaque blob).
Neither is logged or put in an error, except the first 12 characters of ``recipient_ref``;
``Message``'s repr shows only those 12 characters. Providers' error texts are stored and logged
with every run of 7 or more digits masked, since some echo the destination number.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smsgw.errors import QueueError
from smsgw.queuemodel import (
    REF_SHOWN,
    TRANSITIONS,
    Attempt,
    Message,
    NewMessage,
    Outcome,
    State,
    normalize_provider_id,
    scrub_error,
)
from smsgw.sqlite import immediate

__all__ = [
    "EARLY_RECEIPT_TTL",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "Attempt",
    "Message",
    "NewMessage",
    "Outcome",
    "Queue",
    "State",
    "normalize_provider_id",
]
# The model's names are re-exported: ``from smsgw.queue import State`` keeps working.

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""1: messages and attempts; 2: adds ``early_receipt`` (opening a version 1 file adds it)."""
APPLICATION_ID = 0x6B6F7071
"""``PRAGMA application_id`` of a queue file ("kopq"): no other database is taken for one."""
EARLY_RECEIPT_TTL = 3600.0
"""Seconds a receipt that no message waits for is kept, in case its message is accepted later."""
MIN_SQLITE = (3, 37, 0)
"""STRICT tables (3.37), RETURNING (3.35) and UPDATE ... FROM (3.33)."""

_OUTCOME = {
    State.ACCEPTED: Outcome.ACCEPTED,
    State.QUEUED: Outcome.RETRY,
    State.FAILED: Outcome.FAILED,
}
"""How an attempt ends when its message leaves ``sending`` for each state."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY,
    campaign TEXT NOT NULL, recipient_ref TEXT NOT NULL, recipient_ct BLOB NOT NULL,
    part INTEGER NOT NULL, parts INTEGER NOT NULL,
    body BLOB NOT NULL, udh BLOB NOT NULL, data_coding INTEGER NOT NULL,
    esm_class INTEGER NOT NULL, text TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('queued', 'sending', 'accepted', 'delivered', 'failed', 'expired')),
    provider_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, expires_at REAL, last_error TEXT,
    UNIQUE (campaign, recipient_ref, part)
) STRICT;
CREATE INDEX IF NOT EXISTS message_ready ON message (created, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS message_provider ON message (provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS message_state ON message (state, campaign);
CREATE TABLE IF NOT EXISTS attempt (
    message_id INTEGER NOT NULL REFERENCES message (id), number INTEGER NOT NULL,
    started REAL NOT NULL, ended REAL, outcome TEXT, error TEXT,
    PRIMARY KEY (message_id, number)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS early_receipt (
    provider_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('delivered', 'failed', 'expired')),
    error TEXT, received REAL NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS early_receipt_age ON early_receipt (received);
"""

_INSERT = """
INSERT INTO message (campaign, recipient_ref, recipient_ct, part, parts, body, udh,
    data_coding, esm_class, text, state, not_before, created, updated, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)
ON CONFLICT (campaign, recipient_ref, part) DO NOTHING
"""

_KEEP_EARLY = """
INSERT INTO early_receipt (provider_id, state, error, received) VALUES (?, ?, ?, ?)
ON CONFLICT (provider_id) DO UPDATE
    SET state = excluded.state, error = excluded.error, received = excluded.received
"""

_TAKE_EARLY = """
DELETE FROM early_receipt WHERE provider_id = :pid AND received >= (
    SELECT attempt.started FROM attempt JOIN message ON attempt.message_id = message.id
    WHERE message.id = :id AND attempt.number = message.attempts)
RETURNING state, error
"""
"""A kept receipt for this id that came after the message was claimed: it is this message's."""

_CLAIM = """
UPDATE message SET state = 'sending', attempts = attempts + 1, updated = :now
WHERE id IN (
    SELECT id FROM message INDEXED BY message_ready
    WHERE state = 'queued' AND not_before <= :now AND (expires_at IS NULL OR expires_at > :now)
    ORDER BY created, id LIMIT :limit)
RETURNING *
"""


def _row(m: NewMessage, now: float) -> tuple[Any, ...]:
    fixed = (m.campaign, m.recipient_ref, m.recipient_ct, m.part, m.parts, m.body, m.udh)
    return (*fixed, m.data_coding, m.esm_class, m.text, now, now, now, m.expires_at)


def _message(row: sqlite3.Row) -> Message:
    values = dict(zip(row.keys(), row, strict=True))
    values["state"] = State(values["state"])
    return Message(**values)


class Queue:
    """The queue in one SQLite file. Use from one thread; other processes may open it too."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        """Open (creating if needed) the queue at ``path``; ``QueueError`` says what to fix.

        ``busy_timeout`` is how many seconds a write waits for another process's lock.
        """
        self.path = Path(path)
        self._db = _open(self.path, busy_timeout)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- adding -----------------------------------------------------------------------------

    def enqueue(self, message: NewMessage, now: float) -> int:
        """Add one message and return its id; an existing key returns the existing id."""
        key = (message.campaign, message.recipient_ref, message.part)
        with self._write(durable=True) as db:
            db.execute(_INSERT, _row(message, now))
            found = db.execute(
                "SELECT id FROM message WHERE campaign = ? AND recipient_ref = ? AND part = ?", key
            ).fetchone()
        return int(found["id"])

    def enqueue_many(self, messages: Iterable[NewMessage], now: float) -> tuple[int, int]:
        """Add many messages in one transaction; return ``(added, skipped)``.

        Skipped ones already existed (or repeat a key earlier in the same batch).
        """
        seen = 0

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal seen
            for message in messages:
                seen += 1
                yield _row(message, now)

        with self._write(durable=True) as db:
            before = db.total_changes
            db.executemany(_INSERT, rows())
            added = db.total_changes - before
        return added, seen - added

    # --- the worker's side ------------------------------------------------------------------

    def claim(self, limit: int, now: float) -> list[Message]:
        """Move up to ``limit`` due queued messages, oldest first, to ``sending``; return them."""
        if limit < 0:
            raise QueueError(f"claim limit must not be negative, got {limit}")
        with self._write() as db:
            rows = db.execute(_CLAIM, {"now": now, "limit": limit}).fetchall()
            db.executemany(
                "INSERT INTO attempt (message_id, number, started) VALUES (?, ?, ?)",
                [(row["id"], row["attempts"], now) for row in rows],
            )
        return sorted(map(_message, rows), key=lambda m: (m.created, m.id))

    def accepted(self, message_id: int, provider_id: str, now: float) -> None:
        """The provider took the message (``sending`` → ``accepted``) under ``provider_id``."""
        normal = normalize_provider_id(provider_id)
        if not normal:
            raise QueueError(f"message {message_id}: the provider id is empty")
        with self._write() as db:
            self._move(db, message_id, State.ACCEPTED, now, provider_id=normal)
            early = db.execute(_TAKE_EARLY, {"pid": normal, "id": message_id}).fetchone()
            if early is not None:  # its receipt came first: settle it now
                self._move(db, message_id, State(early["state"]), now, early["error"])

    def retry(self, message_id: int, error: str, now: float, delay: float) -> None:
        """A retryable failure: back to ``queued``, not to be claimed before ``now + delay``."""
        if delay < 0:
            raise QueueError(f"message {message_id}: retry delay must not be negative ({delay})")
        error = scrub_error(error)
        with self._write() as db:
            ref = self._move(db, message_id, State.QUEUED, now, error, not_before=now + delay)
        log.info("message %d to %s will be retried in %gs: %s", message_id, ref, delay, error)

    def fail(self, message_id: int, error: str, now: float) -> None:
        """A permanent failure: ``sending`` (or ``accepted``) → ``failed``."""
        error = scrub_error(error)
        with self._write() as db:
            ref = self._move(db, message_id, State.FAILED, now, error)
        log.warning("message %d to %s failed: %s", message_id, ref, error)

    def recover(self, now: float) -> int:
        """On start-up: put every ``sending`` message back to ``queued``; return how many."""
        with self._write() as db:
            db.execute(
                "UPDATE attempt SET ended = ?, outcome = ? FROM message"
                " WHERE message.state = 'sending' AND attempt.message_id = message.id"
                " AND attempt.number = message.attempts",
                (now, Outcome.INTERRUPTED.value),
            )
            count = db.execute(
                "UPDATE message SET state = 'queued', updated = ? WHERE state = 'sending'", (now,)
            ).rowcount
        if count:
            log.warning("requeued %d messages that were being sent when the worker stopped", count)
        return count

    def expire(self, now: float) -> int:
        """Move queued messages whose ``expires_at`` has passed to ``expired``; return how many."""
        with self._write() as db:
            count = db.execute(
                "UPDATE message SET state = 'expired', updated = ?"
                " WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= ?",
                (now, now),
            ).rowcount
        if count:
            log.info("%d queued messages expired unsent", count)
        return count

    # --- delivery receipts ------------------------------------------------------------------

    def delivered_by_provider_id(self, provider_id: str, now: float) -> bool:
        """A delivery receipt: ``accepted`` → ``delivered``. False if the id is unknown."""
        return self._receipt(provider_id, State.DELIVERED, None, now)

    def failed_by_provider_id(self, provider_id: str, error: str, now: float) -> bool:
        """A failed delivery receipt: ``accepted`` → ``failed``. False if the id is unknown."""
        return self._receipt(provider_id, State.FAILED, scrub_error(error), now)

    def expired_by_provider_id(self, provider_id: str, now: float) -> bool:
        """The SMSC gave up (receipt ``EXPIRED``): ``accepted`` → ``expired``. False if unknown."""
        return self._receipt(provider_id, State.EXPIRED, None, now)

    # --- reading ----------------------------------------------------------------------------

    def get(self, message_id: int) -> Message:
        row = self._read("SELECT * FROM message WHERE id = ?", (message_id,))
        if not row:
            raise QueueError(f"there is no message {message_id} in {self.path}")
        return _message(row[0])

    def attempts(self, message_id: int) -> list[Attempt]:
        """The attempt history of one message, first attempt first."""
        rows = self._read(
            "SELECT message_id, number, started, ended, outcome, error FROM attempt"
            " WHERE message_id = ? ORDER BY number",
            (message_id,),
        )
        return [_attempt(row) for row in rows]

    def counts(self) -> dict[State, int]:
        """How many messages are in each state (every state is a key)."""
        result = dict.fromkeys(State, 0)
        for row in self._read("SELECT state, count(*) AS n FROM message GROUP BY state"):
            result[State(row["state"])] = row["n"]
        return result

    def counts_by_campaign(self) -> dict[str, dict[State, int]]:
        """``counts`` for each campaign."""
        result: dict[str, dict[State, int]] = {}
        query = "SELECT campaign, state, count(*) AS n FROM message GROUP BY campaign, state"
        for row in self._read(query):
            per = result.setdefault(row["campaign"], dict.fromkeys(State, 0))
            per[State(row["state"])] = row["n"]
        return result

    def pending(self) -> int:
        """Messages not yet handed to a provider: ``queued`` plus ``sending``."""
        query = "SELECT count(*) AS n FROM message WHERE state IN ('queued', 'sending')"
        return int(self._read(query)[0]["n"])

    # --- internals --------------------------------------------------------------------------

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed on success, rolled back on error."""
        db = self._db
        with self._mapped():
            if durable:
                db.execute("PRAGMA synchronous = FULL")
            try:
                with immediate(db):
                    yield db
            finally:
                if durable:
                    db.execute("PRAGMA synchronous = NORMAL")

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._mapped():
            return self._db.execute(query, params).fetchall()

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """Turn SQLite's errors into ``QueueError`` naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise QueueError(f"SMS queue {self.path}: {exc}{_advice(exc)}") from exc

    def _move(
        self,
        db: sqlite3.Connection,
        message_id: int,
        to: State,
        now: float,
        error: str | None = None,
        **columns: object,
    ) -> str:
        """Move one message to ``to`` (closing its attempt if it leaves ``sending``), also
        setting ``columns``. Returns the loggable start of its recipient ref."""
        row = db.execute(
            "SELECT state, attempts, recipient_ref FROM message WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise QueueError(f"there is no message {message_id} in {self.path}")
        current = State(row["state"])
        if to not in TRANSITIONS[current]:
            raise QueueError(f"message {message_id} cannot go from {current} to {to}")
        if current is State.SENDING:
            db.execute(
                "UPDATE attempt SET ended = ?, outcome = ?, error = ?"
                " WHERE message_id = ? AND number = ?",
                (now, _OUTCOME[to].value, error, message_id, row["attempts"]),
            )
        sets = "".join(f", {name} = :{name}" for name in columns)  # our own column names
        db.execute(
            "UPDATE message SET state = :state, updated = :now,"
            f" last_error = coalesce(:error, last_error){sets} WHERE id = :id",
            {"state": to.value, "now": now, "error": error, "id": message_id, **columns},
        )
        return str(row["recipient_ref"])[:REF_SHOWN]

    def _receipt(self, provider_id: str, to: State, error: str | None, now: float) -> bool:
        normal = normalize_provider_id(provider_id)
        with self._write() as db:
            # An id could be reused by the provider: prefer the message still waiting for it.
            row = db.execute(
                "SELECT id, state FROM message WHERE provider_id = ?"
                " ORDER BY state = 'accepted' DESC, updated DESC, id DESC LIMIT 1",
                (normal,),
            ).fetchone()
            if row is None or row["state"] == to.value:
                # Unknown, or a resent receipt for a settled message: no change now. Kept in
                # case a message still in flight is accepted under this id (module docstring).
                db.execute("DELETE FROM early_receipt WHERE received < ?",
                           (now - EARLY_RECEIPT_TTL,))  # fmt: skip
                if normal:
                    db.execute(_KEEP_EARLY, (normal, to.value, error, now))
                return False
            self._move(db, row["id"], to, now, error)
        return True


def _attempt(row: sqlite3.Row) -> Attempt:
    outcome = Outcome(row["outcome"]) if row["outcome"] is not None else None
    return Attempt(
        row["message_id"], row["number"], row["started"], row["ended"], outcome, row["error"]
    )


# --- opening ----------------------------------------------------------------------------------


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise QueueError(
            f"the SMS queue needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer, this Python"
            f" has {sqlite3.sqlite_version}; use a newer Python build"
        )
    _check_access(path)
    db = None
    try:
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        _prepare(db, path, busy_timeout)
    except BaseException as exc:
        if db is not None:
            db.close()
        if isinstance(exc, sqlite3.Error):
            raise QueueError(f"cannot open SMS queue {path}: {exc}{_advice(exc)}") from exc
        raise
    return db


def _check_access(path: Path) -> None:
    """Say clearly what SQLite would only half say ("readonly database", sometimes later)."""
    where = f"cannot open SMS queue {path}"
    if not path.parent.is_dir():
        raise QueueError(
            f"{where}: the directory {path.parent} does not exist; create it or set another path"
        )
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        raise QueueError(f"{where}: this user may not read and write it; fix its owner or mode")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise QueueError(
            f"{where}: this user may not create files in {path.parent} (SQLite keeps -wal and"
            " -shm files beside the queue); fix the directory's owner or mode"
        )


def _prepare(db: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise QueueError(
            f"cannot open SMS queue {path}: SQLite could not switch it to WAL mode (it is in"
            f" {mode!r} mode); put the queue on a local file system"
        )
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    if _version(db, path) != SCHEMA_VERSION:
        _migrate(db, path)


def _version(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of a queue file (0: a new, empty file); refuses other databases."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
    if app != APPLICATION_ID and (app != 0 or tables):
        raise QueueError(
            f"{path} is an SQLite database but not a kopir SMS queue;"
            " set the queue path to a new file"
        )
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise QueueError(
            f"SMS queue {path} has schema version {version}, newer than this kopir"
            f" understands ({SCHEMA_VERSION}); upgrade kopir"
        )
    return version


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, under the write lock so two first openers cannot race."""
    with immediate(db):
        if _version(db, path) < SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _advice(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text:
        return (
            "; the file is not an SQLite database or is damaged: move it aside or set another path"
        )
    if "readonly" in text or "read-only" in text:
        return (
            "; make the file and its directory writable by this user"
            " (SQLite also creates -wal and -shm files beside it)"
        )
    if "unable to open" in text:
        return (
            "; check that the path names a file (not a directory) that this user may read and"
            " write, in a directory this user may write"
        )
    if "locked" in text or "busy" in text:
        return "; another process held the queue's lock too long: retry, or raise busy_timeout"
    if "full" in text:
        return "; free disk space where the queue lives"
    return ""
