"""The bot's own memory: each user's chosen language and their reports of relays that do not
work, in one SQLite file (``[bot] state``, mode 0600).

Users are never stored by Telegram id. They are stored by *cohort*, the distribution's keyed
hash of ``tg:<user id>`` (``proxylist.Distributor.cohort``): the same value the distribution
record keeps, so a report joins the record's "who was given this relay" without either file
holding an id. Each call opens and closes its own connection, so the bot can use the store from
worker threads (``asyncio.to_thread``) without sharing one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS languages"
    " (cohort TEXT PRIMARY KEY, language TEXT NOT NULL, at REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS reports (relay TEXT NOT NULL, cohort TEXT NOT NULL,"
    " at REAL NOT NULL, PRIMARY KEY (relay, cohort)) WITHOUT ROWID",
)


class StoreError(Exception):
    """The bot's state file cannot be used; the message names it."""


@dataclass(frozen=True)
class RelayReports:
    """Reports of one relay."""

    relay: str
    cohorts: tuple[str, ...]
    """Who reported it (keyed hashes), oldest report first."""
    last: float


class BotStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            with self._db() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the bot's state: {exc}") from None

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    def language(self, cohort: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT language FROM languages WHERE cohort = ?", (cohort,)
            ).fetchone()
        return str(row[0]) if row else None

    def set_language(self, cohort: str, language: str, now: float) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO languages VALUES (?, ?, ?) ON CONFLICT (cohort)"
                " DO UPDATE SET language = excluded.language, at = excluded.at",
                (cohort, language, now),
            )

    def report(self, relay: str, cohort: str, now: float) -> bool:
        """Record that ``cohort`` says ``relay`` does not work; False if it said so before."""
        with self._db() as db:
            done = db.execute(
                "INSERT INTO reports VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (relay, cohort, now)
            )
            return done.rowcount == 1

    def reports(self) -> list[RelayReports]:
        """Every reported relay, most reported first."""
        with self._db() as db:
            rows = db.execute("SELECT relay, cohort, at FROM reports ORDER BY at").fetchall()
        by_relay: dict[str, list[tuple[str, float]]] = {}
        for relay, cohort, at in rows:
            by_relay.setdefault(relay, []).append((cohort, at))
        found = [
            RelayReports(relay, tuple(c for c, _ in items), max(a for _, a in items))
            for relay, items in by_relay.items()
        ]
        return sorted(found, key=lambda r: (-len(r.cohorts), r.relay))


__all__ = ["BotStore", "RelayReports", "StoreError"]
